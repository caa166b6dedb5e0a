"""`trocar device ...` and `trocar bench device` subcommands (filled in by the haptics issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add the haptics subcommands to the top-level parser `sub` and the `bench` parser `bench_sub`."""

