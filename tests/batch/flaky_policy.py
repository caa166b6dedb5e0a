"""Batch policies for the tests (`--policy flaky_policy:NAME`, tests/batch on PYTHONPATH): the expert,
except that the first attempt of a chosen episode kills or freezes its worker. TROCAR_TEST_MARKS
names a directory where the first attempts leave a mark, so the retry plays normally."""

from __future__ import annotations

import os
import time


def _first_attempt(seed: int) -> bool:
    mark = os.path.join(os.environ["TROCAR_TEST_MARKS"], f"seed-{seed}")
    if os.path.exists(mark):
        return False
    open(mark, "w").close()
    return True


def crash_and_hang(procedure: str, seed: int):
    """Seed 1: the worker process dies; seed 2: it hangs; others (and every retry): the expert."""
    from procedures.policies import make_hands

    if seed == 1 and _first_attempt(seed):
        os._exit(3)
    if seed == 2 and _first_attempt(seed):
        time.sleep(3600)
    return make_hands("expert", seed)
