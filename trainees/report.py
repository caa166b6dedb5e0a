"""Reports for sim-lab staff: a trainee's page (learning curves with the proficiency line, plateaus, a
radar of the latest attempt against the benchmark, every attempt), a cohort's page (status per task
per trainee, attempts per week, who is stuck) and the attempts as CSV.

A page is one HTML file with its pictures inline (base64 PNG) and no outside links, so it opens
offline and can be mailed. Its one script only records in the page how many images the browser
decoded (the browser test reads it).
"""

from __future__ import annotations

import csv
import html
import io
import sqlite3
import statistics
from datetime import UTC, datetime

from trainees import plots
from trainees.records import evaluate_all, get_trainee, list_trainees, query_attempts
from trainees.rules import Attempt, Bound, Rules, TaskRule, attempt_meets, target_bounds
from trainees.trends import attempts_per_week, plateau_start, week_of

DEFAULT_EXPERT_COHORT = "experts"   # reference values for radar axes when a rule names no cohort
MAX_TABLE_ROWS = 500

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
td.proficient { background: #cdeccd; } td.training { background: #fff3c4; }
td.capped, td.stuck { background: #f6c6bd; } td.not_started, td.no_benchmark { background: #eee; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""
# Records in <body> how many images the browser decoded; no network, no console output on success.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-decoded', String(ok));
});
"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _page(title: str, body: str) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style><script>{SCRIPT}</script></head>\n<body>\n<h1>{_e(title)}</h1>\n"
            f"<p class=\"note\">trocar records report, generated {stamp}</p>\n{body}\n</body></html>\n")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = classes[i] if classes else [""] * len(row)
        out.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                                    for v, c in zip(row, cls, strict=True)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _bounds(conn: sqlite3.Connection, rule: TaskRule) -> tuple[Bound, ...] | None:
    experts = (query_attempts(conn, procedure=rule.procedure, cohort=rule.expert_cohort)
               if rule.style == "benchmark" else [])
    return target_bounds(rule, experts)


def _references(conn: sqlite3.Connection, rule: TaskRule | None, procedure: str) -> dict[str, float]:
    """Benchmark value per metric: the expert cohort's mean where it has attempts, else the rule's
    bound."""
    cohort = (rule.expert_cohort if rule and rule.expert_cohort else DEFAULT_EXPERT_COHORT)
    experts = [a for a in query_attempts(conn, procedure=procedure, cohort=cohort) if a.status == "success"]
    ref: dict[str, float] = {}
    if rule is not None:
        for b in _bounds(conn, rule) or ():
            ref[b.metric] = b.limit
    names = {m for a in experts for m in a.metrics}
    for m in names:
        vals = [a.metrics[m] for a in experts if m in a.metrics]
        if len(vals) >= 2:
            ref[m] = statistics.fmean(vals)
    return ref


def _rule_for(rules: Rules, procedure: str) -> TaskRule | None:
    return next((t for t in rules.tasks if t.procedure == procedure), None)


def _task_section(conn, rules: Rules, task: str, attempts: list[Attempt]) -> tuple[str, list[str]]:
    """Learning curves for one task; returns (html, plateau notes)."""
    rule = _rule_for(rules, task)
    bounds = {b.metric: b for b in (_bounds(conn, rule) or ())} if rule else {}
    done = [a for a in attempts if a.complete]
    metrics = sorted({m for a in done for m in a.metrics}, key=lambda m: (m not in bounds, m))
    series, notes = {}, []
    for m in metrics:
        pts = [(i + 1, a) for i, a in enumerate(done) if m in a.metrics]
        lower = not any(m in a.higher_better for _, a in pts)
        ys = [a.metrics[m] for _, a in pts]
        b = bounds.get(m)
        met = [attempt_meets(rule, tuple(bounds.values()), a) if rule else bool(a.passed) for _, a in pts]
        start = plateau_start(ys, rules.plateau_window, lower_is_better=lower)
        if start is not None and b is not None and not b.met(statistics.median(ys[-3:])):
            notes.append(f"{task}: {m} has plateaued since attempt {pts[start][0]} "
                         f"(median of last 3: {statistics.median(ys[-3:]):.4g}, target {b.limit:.4g})")
        unit = next((u for u in [_unit(conn, a.id, m) for _, a in pts[-1:]] if u), "")
        series[m] = {"x": [x for x, _ in pts], "y": ys, "met": met, "unit": unit,
                     "limit": b.limit if b else None,
                     "limit_label": ("expert mean + 2 SD" if rule and rule.style == "benchmark"
                                     else "proficiency target"),
                     "plateau": start}
    if not series:
        return "", notes
    return _img(plots.learning_curves(task, series), f"learning curves for {task}"), notes


def _unit(conn: sqlite3.Connection, attempt_id: int, metric: str) -> str:
    row = conn.execute("SELECT unit FROM metrics WHERE attempt_id = ? AND name = ?",
                       (attempt_id, metric)).fetchone()
    return (row[0] or "") if row else ""


def _attempt_rows(attempts: list[Attempt], rules: Rules, bounds_by_task: dict) -> list[list[str]]:
    rows = []
    for a in reversed(attempts[-MAX_TABLE_ROWS:]):
        rule = _rule_for(rules, a.task)
        bounds = bounds_by_task.get(a.task)
        met = "-" if rule is None or bounds is None or not a.complete else (
            "yes" if attempt_meets(rule, bounds, a) else "no")
        rows.append([_e(a.id), _e(a.started.replace("+00:00", "Z")), _e(a.task), _e(a.status),
                     _num(a.score), {True: "yes", False: "no", None: "-"}[a.passed], met,
                     _e(", ".join(a.error_kinds)),
                     _e("  ".join(f"{k}={v:.4g}" for k, v in sorted(a.metrics.items())))])
    return rows


def trainee_report(conn: sqlite3.Connection, rules: Rules, trainee: str, *, drop_names: bool = False) -> str:
    t = get_trainee(conn, trainee)
    statuses = evaluate_all(conn, rules, trainee)
    attempts = query_attempts(conn, trainee=trainee)
    who = t["id"] + ("" if drop_names or not t["name"] else f" ({t['name']})")
    parts = [f"<p>Trainee <b>{_e(who)}</b>" + (f", cohort {_e(t['cohort'])}" if t["cohort"] else "")
             + f"; {len(attempts)} attempts ({sum(not a.complete for a in attempts)} incomplete).</p>"]
    parts.append("<h2>Proficiency</h2>")
    parts.append(_table(["task", "status", "met", "attempts", "rule", "why"],
                        [[_e(r.name), _e(statuses[r.name].status), _e(statuses[r.name].met),
                          _e(statuses[r.name].attempts), _e(r.describe()), _e(statuses[r.name].reason)]
                         for r in rules.tasks],
                        [["", statuses[r.name].status, "", "", "", ""] for r in rules.tasks]))
    tasks = list(dict.fromkeys(a.task for a in attempts))
    parts.append("<h2>Learning curves</h2>")
    notes: list[str] = []
    for task in tasks:
        img, n = _task_section(conn, rules, task, [a for a in attempts if a.task == task])
        parts.append(img)
        notes += n
    if not tasks:
        parts.append("<p>No attempts yet.</p>")
    parts.append("<h2>Plateaus</h2>")
    parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else
                 f"<p>No plateau below target (a plateau: less than 5 % improvement over the last "
                 f"{rules.plateau_window} attempts).</p>")
    latest = next((a for a in reversed(attempts) if a.complete), None)
    if latest is not None:
        ref = _references(conn, _rule_for(rules, latest.task), latest.task)
        axes = [m for m in sorted(latest.metrics) if m in ref and latest.metrics[m] > 0 and ref[m] > 0]
        if axes:
            ratios = [(latest.metrics[m] / ref[m]) if m in latest.higher_better
                      else (ref[m] / latest.metrics[m]) for m in axes]
            parts.append("<h2>Latest attempt against the benchmark</h2>")
            parts.append(_img(plots.radar(f"attempt {latest.id}: {latest.task}", axes, ratios),
                              "radar of the latest attempt against the benchmark"))
            parts.append('<p class="note">Each axis: benchmark / value (value / benchmark when higher is '
                         "better); 1 is the benchmark, outside is better. Benchmark: the expert cohort's "
                         "mean where it has attempts, else the proficiency target.</p>")
    bounds_by_task = {r.procedure: _bounds(conn, r) for r in rules.tasks}
    parts.append("<h2>Attempts</h2>")
    parts.append(_table(["#", "started", "task", "status", "score", "passed", "target met", "errors",
                         "metrics"], _attempt_rows(attempts, rules, bounds_by_task)))
    return _page(f"trocar report: trainee {t['id']}", "\n".join(parts))


def stuck_reason(conn, rules: Rules, trainee: str, statuses: dict) -> str | None:
    """Why a trainee is stuck (capped, or a plateau below target on an open task), or None."""
    for r in rules.tasks:
        st = statuses[r.name]
        if st.status == "capped":
            return f"{r.name}: {st.reason}"
    for r in rules.tasks:
        if statuses[r.name].status != "training":
            continue
        bounds = _bounds(conn, r) or ()
        done = [a for a in query_attempts(conn, trainee=trainee, procedure=r.procedure) if a.complete]
        for b in bounds:
            ys = [a.metrics[b.metric] for a in done if b.metric in a.metrics]
            start = plateau_start(ys, rules.plateau_window, lower_is_better=b.lower_is_better)
            if start is not None and not b.met(statistics.median(ys[-3:])):
                return (f"{r.name}: {b.metric} flat for {len(ys) - start} attempts at "
                        f"{statistics.median(ys[-3:]):.4g} (target {b.limit:.4g})")
    return None


def cohort_report(conn: sqlite3.Connection, rules: Rules, cohort: str, *, drop_names: bool = False) -> str:
    trainees = list_trainees(conn, cohort)
    rows, classes, stuck = [], [], []
    all_attempts: list[Attempt] = []
    for t in trainees:
        statuses = evaluate_all(conn, rules, t["id"])
        mine = query_attempts(conn, trainee=t["id"])
        all_attempts += mine
        reason = stuck_reason(conn, rules, t["id"], statuses)
        if reason:
            stuck.append((t["id"], reason))
        label = t["id"] + ("" if drop_names or not t["name"] else f" ({t['name']})")
        last = mine[-1].started.replace("+00:00", "Z") if mine else "-"
        rows.append([_e(label), *(_e(f"{statuses[r.name].status} ({statuses[r.name].met}/"
                                     f"{statuses[r.name].attempts})") for r in rules.tasks),
                     _e(len(mine)), _e(last), _e("stuck" if reason else "")])
        classes.append(["", *(statuses[r.name].status for r in rules.tasks), "", "",
                        "stuck" if reason else ""])
    parts = [f"<p>Cohort <b>{_e(cohort)}</b>: {len(trainees)} trainees, {len(all_attempts)} attempts.</p>",
             "<h2>Status per task</h2>",
             '<p class="note">status (attempts that met the target / complete attempts)</p>',
             _table(["trainee", *(r.name for r in rules.tasks), "attempts", "last attempt", ""],
                    rows, classes),
             "<h2>Attempts per week</h2>"]
    weeks = attempts_per_week([a.started for a in all_attempts])
    if weeks:
        index = {w: i for i, w in enumerate(weeks)}
        counts: dict[str, list[int]] = {}
        for a in all_attempts:
            counts.setdefault(a.task, [0] * len(weeks))[index[week_of(a.started)]] += 1
        parts.append(_img(plots.weekly_bars(list(weeks), counts), "attempts per week"))
    else:
        parts.append("<p>No attempts yet.</p>")
    parts.append("<h2>Who is stuck</h2>")
    parts.append("<ul>" + "".join(f"<li><b>{_e(t)}</b>: {_e(r)}</li>" for t, r in stuck) + "</ul>"
                 if stuck else "<p>Nobody: every trainee still improves or is proficient.</p>")
    return _page(f"trocar report: cohort {cohort}", "\n".join(parts))


def attempts_csv(conn: sqlite3.Connection, *, trainee: str | None = None, cohort: str | None = None,
                 drop_names: bool = False) -> str:
    """Every attempt as one CSV row, one column per metric (the union over the rows)."""
    if cohort is not None:
        list_trainees(conn, cohort)  # an unknown cohort is an error, not an empty file
    attempts = query_attempts(conn, trainee=trainee, cohort=cohort)
    people = {r["id"]: r for r in conn.execute("SELECT * FROM trainees")}
    extra = {r["id"]: r for r in conn.execute(
        "SELECT id, version, ended, recording_path, recording_sha256 FROM attempts")}
    metrics = sorted({m for a in attempts for m in a.metrics})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["attempt", "trainee", *([] if drop_names else ["name"]), "cohort", "procedure", "version",
            "started", "ended", "status", "score", "passed", "errors", "recording", "recording_sha256"]
    w.writerow(head + metrics)
    for a in attempts:
        p, x = people[a.trainee_id], extra[a.id]
        w.writerow([a.id, a.trainee_id, *([] if drop_names else [p["name"] or ""]), p["cohort"] or "",
                    a.task, x["version"], a.started, x["ended"] or "", a.status,
                    "" if a.score is None else a.score, {True: 1, False: 0, None: ""}[a.passed],
                    ";".join(a.error_kinds), x["recording_path"] or "", x["recording_sha256"] or "",
                    *["" if m not in a.metrics else repr(a.metrics[m]) for m in metrics]])
    return buf.getvalue()
