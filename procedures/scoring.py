"""FLS/MISTELS-style scores: time to a cut-off, minus penalties, normalised to 0..100.

    score = 100 * clip(cutoff - time - penalty, 0, cutoff) / cutoff

time [s], cutoff [s], penalty in seconds-equivalent. FLS publishes the structure (cut-off minus
time minus penalty, normalised) but not its normalisation constants (MISTELS papers divide by a
reference group's mean, which is not public); dividing by the cut-off is our choice: 0 = no score
(time-out), 100 = an instant, penalty-free attempt (docs/procedures.md).
"""

from __future__ import annotations


def fls_score(time_s: float, penalty: float, cutoff_s: float) -> float:
    """Normalised score [0..100] (see the module docstring); a timed-out attempt scores 0."""
    if time_s >= cutoff_s:
        return 0.0
    raw = cutoff_s - time_s - penalty
    return round(100.0 * min(max(raw, 0.0), cutoff_s) / cutoff_s, 3)
