"""The procedures trocar knows, by name."""

from __future__ import annotations

from procedures.base import Procedure

PROCEDURES = ("peg_transfer", "pattern_cut", "cholecystectomy")


def procedure_class(name: str) -> type[Procedure]:
    """The class of the procedure `name` (its class attributes without an instance); ValueError
    naming the known ones otherwise."""
    if name == "peg_transfer":
        from procedures.peg_transfer import PegTransfer

        return PegTransfer
    if name == "pattern_cut":
        from procedures.pattern_cut import PatternCut

        return PatternCut
    if name == "cholecystectomy":
        from procedures.cholecystectomy import Cholecystectomy

        return Cholecystectomy
    raise ValueError(f"unknown procedure {name!r}; known: {', '.join(PROCEDURES)}")


def get_procedure(name: str) -> Procedure:
    """A new instance of the procedure `name`; ValueError naming the known ones otherwise."""
    return procedure_class(name)()
