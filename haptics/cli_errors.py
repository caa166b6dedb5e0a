"""The one-line error of the haptics commands: `trocar: error: MESSAGE` on stderr, exit status 2.

Its own module so that `haptics.cli` and the subcommand modules it loads (calibration, the
emulator) print the same line without importing each other.
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2  # exit status of every error a user can cause (bad port, option, file)


def fail(msg: str) -> int:
    """Print `trocar: error: msg` to stderr; returns the exit status to give back."""
    print(f"trocar: error: {msg}", file=sys.stderr)
    return EXIT_USER_ERROR
