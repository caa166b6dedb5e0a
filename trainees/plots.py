"""The report's pictures: matplotlib figures rendered to PNG and returned as base64 text, so a report
is one self-contained HTML file. No pyplot: figures are built directly, with no global state and no
display needed."""

from __future__ import annotations

import base64
import io
import math

from matplotlib.figure import Figure

DPI = 96
PASS_COLOUR, FAIL_COLOUR, LINE_COLOUR = "#2a9d3f", "#c8553d", "#1f4e79"


def png_base64(fig: Figure) -> str:
    buf = io.BytesIO()
    # every figure is laid out with tight_layout already; bbox_inches="tight" would measure it again
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def learning_curves(task: str, series: dict[str, dict]) -> str:
    """One panel per metric: the value per attempt (green: target met, red: not), the proficiency line
    and the plateau (shaded).

    series[metric] = {"x": attempt numbers, "y": values, "met": bools, "unit": str,
                      "limit": float | None, "limit_label": str, "plateau": index or None}
    """
    n = max(1, len(series))
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.2 * cols, 3.0 * rows))
    for i, (metric, s) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(s["x"], s["y"], "-", color="#999999", lw=1, zorder=1)
        ax.scatter(s["x"], s["y"], c=[PASS_COLOUR if m else FAIL_COLOUR for m in s["met"]], s=18, zorder=2)
        if s.get("limit") is not None:
            ax.axhline(s["limit"], color=LINE_COLOUR, ls="--", lw=1.2, label=s.get("limit_label", "target"))
            ax.legend(loc="upper right", fontsize=8)
        if s.get("plateau") is not None and s["x"]:
            ax.axvspan(s["x"][s["plateau"]] - 0.5, s["x"][-1] + 0.5, color="#f2c14e", alpha=0.25, lw=0)
            ax.text(s["x"][s["plateau"]], ax.get_ylim()[0], " plateau", va="bottom", fontsize=8)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.set_xlabel("attempt")
        ax.set_ylabel(f"{metric} [{s.get('unit') or '-'}]")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_base64(fig)


def radar(title: str, axes: list[str], ratios: list[float]) -> str:
    """The latest attempt against the benchmark: each axis is benchmark / value for a lower-is-better
    metric (value / benchmark when higher is better), so 1 is the benchmark and outside it is better.
    Fewer than three axes make no polygon; they are drawn as bars on the same scale."""
    fig = Figure(figsize=(4.6, 4.2))
    capped = [min(max(r, 0.0), 2.0) for r in ratios]  # keep one wild value from flattening the rest
    if len(axes) >= 3:
        ax = fig.add_subplot(1, 1, 1, projection="polar")
        ang = [2 * math.pi * i / len(axes) for i in range(len(axes))]
        ax.plot([*ang, ang[0]], [*capped, capped[0]], color=LINE_COLOUR, lw=2, label="latest attempt")
        ax.fill([*ang, ang[0]], [*capped, capped[0]], color=LINE_COLOUR, alpha=0.2)
        ax.plot([*ang, ang[0]], [1.0] * (len(axes) + 1), color=FAIL_COLOUR, ls="--", lw=1, label="benchmark")
        ax.set_xticks(ang)
        ax.set_xticklabels(axes, fontsize=8)
        ax.set_ylim(0, 2.0)
        ax.legend(loc="lower right", fontsize=7, bbox_to_anchor=(1.15, -0.1))
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(axes, capped, color=LINE_COLOUR, alpha=0.6, label="latest attempt")
        ax.axhline(1.0, color=FAIL_COLOUR, ls="--", lw=1, label="benchmark")
        ax.set_ylim(0, 2.0)
        ax.set_ylabel("benchmark / value (1 = benchmark, higher is better)")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png_base64(fig)


def weekly_bars(weeks: list[str], counts_by_task: dict[str, list[int]]) -> str:
    """Attempts per ISO week, stacked by task."""
    fig = Figure(figsize=(max(5.0, 0.45 * len(weeks) + 2), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    bottom = [0] * len(weeks)
    for task, counts in counts_by_task.items():
        ax.bar(weeks, counts, bottom=bottom, label=task)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_ylabel("attempts")
    ax.set_title("attempts per week", fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not on them
    fig.tight_layout()
    return png_base64(fig)
