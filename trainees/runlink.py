"""The link between `trocar run PROCEDURE --trainee ID` and the records: its options, the attempt begun
before the session and finished after it. The runtime calls three functions and knows nothing else of
the records:

    add_run_args(run_parser)                                         # --trainee, --records-db, --rules
    attempt = begin_for_run(args, procedure.name, procedure.version,
                            recording=cfg.record, seed=cfg.seed, serials=[...])   # before the session
    ... session ...   (in a `finally:`)
    finish_for_run(args, attempt, cfg.record)                        # after it, however it ended

The result is read from `<recording>.result.json` (written by the procedure runner). A session that
ended without one (Ctrl-C before the procedure finished, a crash caught by `finally`) is stored as
incomplete with its recording's hash; one killed outright (kill -9) stays as begun: incomplete, with its
recording path. All checks that can fail on bad input (unknown trainee, malformed rules) run in
begin_for_run, before the session starts.
"""

from __future__ import annotations

import argparse
import json
import os

from sim.errors import UserError
from trainees.records import begin_attempt, device_for_serial, finish_attempt
from trainees.rules import Rules, Status, load_rules

RESULT_SUFFIX = ".result.json"


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trainee", help="store this attempt in the records under this trainee id")
    p.add_argument("--records-db", help="records database (default $XDG_DATA_HOME/trocar/records.sqlite3)")
    p.add_argument("--rules", help="proficiency rules TOML (default: the packaged rules)")


def begin_for_run(args: argparse.Namespace, procedure: str, version: str, *, recording: str,
                  seed: int | None = None, serials: list[str] = ()) -> int | None:
    """Begin the attempt (None without --trainee). Raises UserError before anything is written when
    the trainee is unknown or the rules file is bad."""
    if not getattr(args, "trainee", None):
        return None
    if not recording:
        raise UserError("--trainee needs a recording path (the attempt keeps it)")
    args._records_rules = load_rules(getattr(args, "rules", None))
    devices = [device_for_serial(s, hand) for hand, s in enumerate(serials)]
    return begin_attempt(getattr(args, "records_db", None), args.trainee, procedure, version,
                         devices=devices, recording=recording, seed=seed)


def finish_for_run(args: argparse.Namespace, attempt: int | None, recording: str) -> Status | None:
    """Finish the attempt from `<recording>.result.json`, or as incomplete when there is none."""
    if attempt is None:
        return None
    rules: Rules | None = getattr(args, "_records_rules", None)
    path = recording + RESULT_SUFFIX
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = json.dumps({"status": "incomplete", "metrics": {}, "errors": []})
    return finish_attempt(getattr(args, "records_db", None), attempt, text, recording_path=recording,
                          rules=rules)
