"""A batch's results: one Parquet file, a summary (mean and SD per metric), plots.

results.parquet: one row per finished episode: episode, seed, procedure, policy, status, completed,
passed, score, duration_s, errors, ticks, checksum, wall_s, attempt, worker, recording, and one
float64 column per metric named `m_<metric>` (null where the metric is undefined). The Parquet
schema metadata `trocar.units` maps each metric column to its unit (JSON).
summary.json / the printed table: per numeric column (score, duration_s, errors, metrics) the
count, mean and SD (sample SD, ddof=1; 0 with one episode), plus the share passed.
plots.png: one histogram per metric (matplotlib, Agg).
"""

from __future__ import annotations

import glob
import json
import math
import os

FIXED = ("episode", "seed", "procedure", "policy", "status", "completed", "passed", "score", "duration_s",
         "errors", "ticks", "checksum", "wall_s", "attempt", "worker", "recording")


def load_rows(out_dir: str) -> list[dict]:
    """The finished episodes' rows (DIR/episodes/ep-*.json), in episode order."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "episodes", "ep-*.json"))):
        if path.endswith(".result.json"):
            continue
        with open(path) as fh:
            rows.append(json.load(fh))
    return sorted(rows, key=lambda r: r["episode"])


def write_parquet(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({k for r in rows for k in r.get("metrics", {})})
    cols = {k: [r.get(k) for r in rows] for k in FIXED}
    for name in names:
        cols[f"m_{name}"] = [None if r["metrics"].get(name) is None else float(r["metrics"][name])
                             for r in rows]
    units = {f"m_{n}": next((r["units"][n] for r in rows if n in r.get("units", {})), "") for n in names}
    schema_fields = []
    for k in cols:
        if k.startswith("m_") or k in ("score", "duration_s", "wall_s"):
            schema_fields.append(pa.field(k, pa.float64()))
        elif k in ("completed", "passed"):
            schema_fields.append(pa.field(k, pa.bool_()))
        elif k in ("episode", "seed", "errors", "ticks", "attempt"):
            schema_fields.append(pa.field(k, pa.int64()))
        else:
            schema_fields.append(pa.field(k, pa.string()))
    schema = pa.schema(schema_fields, metadata={"trocar.units": json.dumps(units)})
    pq.write_table(pa.table(cols, schema=schema), path)


def summarize(rows: list[dict]) -> dict:
    """{'episodes', 'passed_share', 'statuses', 'columns': {name: {n, mean, sd, unit}}}."""
    cols: dict[str, list[float]] = {"score": [], "duration_s": [], "errors": []}
    units = {"score": "0-100", "duration_s": "s", "errors": "count"}
    for r in rows:
        for k in ("score", "duration_s", "errors"):
            cols[k].append(float(r[k]))
        for k, v in r.get("metrics", {}).items():
            cols.setdefault(k, [])
            units.setdefault(k, r.get("units", {}).get(k, ""))
            if v is not None:
                cols[k].append(float(v))
    out = {}
    for k, vals in cols.items():
        n = len(vals)
        mean = sum(vals) / n if n else math.nan
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        out[k] = {"n": n, "mean": mean, "sd": sd, "unit": units.get(k, "")}
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"episodes": len(rows), "passed_share": sum(bool(r["passed"]) for r in rows) / max(1, len(rows)),
            "statuses": statuses, "columns": out}


def print_summary(summary: dict, title: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"{title}: {summary['episodes']} episodes, "
              f"{100 * summary['passed_share']:.0f} % passed, {summary['statuses']}")
    for col in ("metric", "n", "mean", "SD", "unit"):
        t.add_column(col, justify="left" if col in ("metric", "unit") else "right")
    for k, s in summary["columns"].items():
        t.add_row(k, str(s["n"]), f"{s['mean']:.4g}", f"{s['sd']:.3g}", s["unit"])
    console.print(t)


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["score"] + sorted({k for r in rows for k in r.get("metrics", {})})
    ncol = 4
    nrow = max(1, math.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        vals = [r["score"] if name == "score" else r["metrics"].get(name) for r in rows]
        vals = [v for v in vals if v is not None]
        ax.hist(vals, bins=min(20, max(3, len(vals))))
        unit = next((r.get("units", {}).get(name, "") for r in rows if name in r.get("units", {})), "")
        ax.set_title(f"{name} [{unit}]" if unit else name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: str, title: str, *, console=None) -> dict:
    """results.parquet, summary.json, plots.png in out_dir; prints the table; returns the summary."""
    rows = load_rows(out_dir)
    summary = summarize(rows)
    if rows:
        write_parquet(rows, os.path.join(out_dir, "results.parquet"))
        plot(rows, os.path.join(out_dir, "plots.png"), title)
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print_summary(summary, title, console)
    return summary
