"""`trocar trainee`, `trocar attempts`, `trocar next`, `trocar report`, `trocar export xapi` and
`trocar bench curriculum` (registered by sim.cli).

Bad input (an unknown trainee, a malformed rules file, a database from a newer trocar) prints one line
`trocar: error: ...` and exits with status 2; nothing is written on those paths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sim.errors import UserError


@contextlib.contextmanager
def _db(args: argparse.Namespace, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    from trainees.db import connect

    conn = connect(args.db, create=create)
    try:
        yield conn
    except sqlite3.DatabaseError as exc:  # e.g. a corrupt page, or a disk that filled up
        raise UserError(f"records database: {exc}") from None
    finally:
        conn.close()


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file or nothing: a reader never sees a half-written report or export."""
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(f"no such directory: {p.parent}")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)


# ---------------------------------------------------------------- trainee / attempts

def _cmd_trainee(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trainees import records
    from trainees.rules import load_rules

    if args.trainee_command == "add":
        records.add_trainee(args.db, args.id, name=args.name, cohort=args.cohort)
        print(f"added trainee {args.id}")
        return 0
    with _db(args) as conn:
        if args.trainee_command == "list":
            table = Table("id", "name", "cohort", "attempts", "proficient at", title="trainees")
            for t in records.list_trainees(conn, args.cohort):
                n = conn.execute("SELECT COUNT(*) FROM attempts WHERE trainee_id = ?",
                                 (t["id"],)).fetchone()[0]
                prof = [r["task"] for r in conn.execute(
                    "SELECT task FROM proficiency WHERE trainee_id = ? AND status = 'proficient' "
                    "ORDER BY task", (t["id"],))]
                table.add_row(t["id"], t["name"] or "", t["cohort"] or "", str(n), ", ".join(prof))
            _console().print(table)
            return 0
        rules = load_rules(args.rules)
        t = records.get_trainee(conn, args.id)
        statuses = records.evaluate_all(conn, rules, args.id)
        con = _console()
        con.print(f"trainee [bold]{t['id']}[/bold]" + (f" ({t['name']})" if t["name"] else "")
                  + (f", cohort {t['cohort']}" if t["cohort"] else "") + f", added {t['created']}")
        table = Table("task", "status", "met", "attempts", "rule", "why", title="proficiency")
        for rule in rules.tasks:
            st = statuses[rule.name]
            table.add_row(rule.name, st.status, str(st.met), str(st.attempts), rule.describe(), st.reason)
        con.print(table)
        _attempts_table(con, records.query_attempts(conn, trainee=args.id)[-10:], "last attempts")
        return 0


def _attempts_table(con, attempts, title: str) -> None:
    from rich.table import Table

    table = Table("#", "trainee", "task", "started", "status", "score", "passed", "metrics", title=title)
    for a in attempts:
        table.add_row(str(a.id), a.trainee_id, a.task, a.started.replace("+00:00", "Z"), a.status,
                      _fmt(a.score), {True: "yes", False: "no", None: "-"}[a.passed],
                      "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(a.metrics.items())))
    con.print(table)


def _cmd_attempts(args: argparse.Namespace) -> int:
    from trainees import records

    with _db(args) as conn:
        got = records.query_attempts(conn, trainee=args.trainee, procedure=args.task, since=args.since,
                                     passed=args.passed)
        _attempts_table(_console(), got, f"attempts ({len(got)})")
    return 0


def _cmd_next(args: argparse.Namespace) -> int:
    from trainees.progression import advise_from_db
    from trainees.rules import load_rules

    rules = load_rules(args.rules)
    with _db(args) as conn:
        adv = advise_from_db(conn, rules, args.trainee)
    if args.json:
        print(json.dumps({"trainee": args.trainee, "task": adv.task, "settings": adv.settings,
                          "not_before": adv.not_before, "why": adv.why,
                          "skipped": [{"task": t, "reason": r} for t, r in adv.skipped]}))
        return 0
    if adv.task is None:
        print(f"next: nothing: {adv.why}")
    else:
        extra = " ".join(f"--{k} {v}" for k, v in adv.settings.items())
        when = f" (after {adv.not_before})" if adv.not_before else ""
        print(f"next: {adv.task}{when} {extra}".rstrip())
        print(f"why: {adv.why}")
    for task, reason in adv.skipped:
        print(f"skipped {task}: {reason}")
    return 0


# ---------------------------------------------------------------- reports and exports

def _cmd_report(args: argparse.Namespace) -> int:
    from trainees import report
    from trainees.rules import load_rules

    if (args.trainee is None) == (args.cohort is None):
        raise UserError("report: give exactly one of --trainee ID or --cohort NAME")
    if args.out is None and args.csv is None:
        raise UserError("report: give --out report.html and/or --csv attempts.csv")
    rules = load_rules(args.rules)
    with _db(args) as conn:
        if args.csv:
            data = report.attempts_csv(conn, trainee=args.trainee, cohort=args.cohort,
                                       drop_names=args.drop_names)
        if args.out:
            if args.trainee:
                html = report.trainee_report(conn, rules, args.trainee, drop_names=args.drop_names)
            else:
                html = report.cohort_report(conn, rules, args.cohort, drop_names=args.drop_names)
    if args.csv:
        write_atomic(args.csv, data.encode("utf-8"))
        print(f"wrote {args.csv}")
    if args.out:
        write_atomic(args.out, html.encode("utf-8"))
        print(f"wrote {args.out}")
    return 0


def _cmd_export_xapi(args: argparse.Namespace) -> int:
    from trainees import xapi
    from trainees.rules import load_rules

    rules = load_rules(args.rules)
    if args.out is None and args.lrs is None:
        raise UserError("export xapi: give --out FILE and/or --lrs URL")
    password = args.password if args.password is not None else os.environ.get("TROCAR_LRS_PASSWORD")
    if args.lrs and (args.user is None) != (password is None):
        raise UserError("export xapi: --user and --password (or $TROCAR_LRS_PASSWORD) go together")
    with _db(args) as conn:
        statements = xapi.statements_for(conn, rules, trainee=args.trainee, since=args.since,
                                         drop_names=args.drop_names)
    if args.out:
        write_atomic(args.out, (json.dumps(statements, indent=1, allow_nan=False) + "\n").encode("utf-8"))
        print(f"wrote {len(statements)} statements to {args.out}")
    if args.lrs:
        sent = xapi.send(args.lrs, statements, user=args.user, password=password)
        print(f"the LRS at {args.lrs} accepted {sent} statements")
    return 0


def _cmd_bench_curriculum(args: argparse.Namespace) -> int:
    from benchmarks.curriculum import run

    return run(args)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="records database (default $XDG_DATA_HOME/trocar/records.sqlite3, "
                   "i.e. ~/.local/share/trocar/records.sqlite3)")


def _add_rules(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", help="proficiency rules TOML (default: the packaged trainees/rules.toml)")


def register(sub: argparse._SubParsersAction, bsub: argparse._SubParsersAction) -> None:
    """Add the records subcommands and `bench curriculum`."""
    t = sub.add_parser("trainee", help="add, list and show trainees (records database)")
    tsub = t.add_subparsers(dest="trainee_command", metavar="ACTION", required=True)
    ta = tsub.add_parser("add", help="add a trainee under a pseudonymous id")
    ta.add_argument("id", help="pseudonymous id (no real names here: use --name if the lab wants one)")
    ta.add_argument("--name", help="real name (optional; exports can drop it)")
    ta.add_argument("--cohort", help="cohort, e.g. PGY1-2026 or experts")
    tl = tsub.add_parser("list", help="all trainees, or one cohort's")
    tl.add_argument("--cohort")
    ts = tsub.add_parser("show", help="a trainee's proficiency per task and last attempts")
    ts.add_argument("id")
    _add_rules(ts)
    for p in (ta, tl, ts):
        _add_db(p)
    t.set_defaults(func=_cmd_trainee)

    a = sub.add_parser("attempts", help="stored attempts, filtered")
    a.add_argument("--trainee")
    a.add_argument("--task", help="procedure name, e.g. peg_transfer")
    a.add_argument("--since", help="ISO 8601 date or time, e.g. 2026-01-31")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--passed", action="store_const", const=True, help="passed attempts only")
    g.add_argument("--failed", dest="passed", action="store_const", const=False, help="failed only")
    _add_db(a)
    a.set_defaults(func=_cmd_attempts)

    n = sub.add_parser("next", help="which task a trainee should practise next, and why")
    n.add_argument("--trainee", required=True)
    n.add_argument("--json", action="store_true", help="one JSON object")
    _add_db(n)
    _add_rules(n)
    n.set_defaults(func=_cmd_next)

    r = sub.add_parser("report", help="a trainee's or a cohort's report (self-contained HTML) or CSV")
    r.add_argument("--trainee")
    r.add_argument("--cohort")
    r.add_argument("--out", help="HTML file to write")
    r.add_argument("--csv", help="also (or only) write the attempts as CSV")
    r.add_argument("--drop-names", action="store_true", help="pseudonymous ids only")
    _add_db(r)
    _add_rules(r)
    r.set_defaults(func=_cmd_report)

    e = sub.add_parser("export", help="export records in standard formats")
    esub = e.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    x = esub.add_parser("xapi", help="xAPI statements (cmi5 rules) to a file and/or a Learning Record Store")
    x.add_argument("--out", help="JSON file to write (a list of statements)")
    x.add_argument("--lrs", help="LRS base URL, e.g. http://localhost:8100 "
                   "(statements go to URL/xAPI/statements)")
    x.add_argument("--user", help="LRS basic-auth user")
    x.add_argument("--password", help="LRS basic-auth password (or $TROCAR_LRS_PASSWORD)")
    x.add_argument("--trainee", help="only this trainee")
    x.add_argument("--since", help="only attempts started since (ISO 8601)")
    x.add_argument("--drop-names", action="store_true", help="actors carry pseudonymous ids only")
    _add_db(x)
    _add_rules(x)
    x.set_defaults(func=_cmd_export_xapi)

    bc = bsub.add_parser("curriculum", help="simulated learners: attempts to proficiency, "
                         "`trocar next` vs round-robin")
    bc.add_argument("--learners", type=int, default=50, help="simulated learners (default 50)")
    bc.add_argument("--seed", type=int, default=0)
    bc.add_argument("--per-day", type=int, default=6, help="attempts per day at most (default 6)")
    bc.add_argument("--limit", type=int, default=400, help="give up after this many attempts (default 400)")
    bc.add_argument("--json", action="store_true", help="one JSON object")
    bc.add_argument("--db", help="also store the simulated learners (cohorts sim-next, sim-round_robin, "
                    "sim-round_robin_skip) and an expert cohort in this records database, e.g. to try "
                    "`trocar report`")
    _add_rules(bc)
    bc.set_defaults(func=_cmd_bench_curriculum)
