"""Errors a user can cause (bad option values), printed by the CLI as one line with exit status 2.

Kept out of `sim.cli` so that `python -m sim.cli` (where the CLI module is `__main__`) and the
subcommand modules share one class.
"""


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""
