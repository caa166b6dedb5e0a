"""xAPI statements for stored attempts, following cmi5's rules, and sending them to a Learning Record
Store (HTTP basic auth, stdlib urllib).

Per attempt (one cmi5 registration and session): launched, initialized, then completed (a finished
procedure), passed or failed (at most one; the only statements with a score), terminated; an
interrupted attempt gets abandoned instead of completed/passed/failed/terminated. Every statement but
launched/initialized carries an ISO 8601 duration. Metrics ride as result extensions under
`<iri_base>/metrics/<name>` (iri_base from the rules file). Statement ids are UUIDv5 of the database id,
attempt and verb, so exporting twice sends the same statements and an LRS keeps one copy.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime

from sim.errors import UserError
from trainees.records import attempt_row, query_attempts
from trainees.rules import Rules, attempt_meets, target_bounds

XAPI_VERSION = "1.0.3"
ADL = "http://adlnet.gov/expapi/verbs/"
ADL_W3ID = "https://w3id.org/xapi/adl/verbs/"
VERBS = {
    "launched": ADL + "launched", "initialized": ADL + "initialized", "completed": ADL + "completed",
    "passed": ADL + "passed", "failed": ADL + "failed", "terminated": ADL + "terminated",
    "abandoned": ADL_W3ID + "abandoned",
}
CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
MOVEON_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/moveon"
SESSION_EXT = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
NAMESPACE = uuid.UUID("5b0c1f8e-3a57-4c43-9d38-3f1e4b3c7a10")  # trocar's UUIDv5 namespace (random, fixed)
# Statements per POST. Large, because Ralph's file-system backend (the one the tests run) stores only
# the first POST that brings new statements into a file; real backends take any number of POSTs.
BATCH = 2000


def iso_duration(seconds: float) -> str:
    """ISO 8601 duration, e.g. 125.5 s -> PT2M5.5S."""
    seconds = max(0.0, seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = "PT" + (f"{int(h)}H" if h else "") + (f"{int(m)}M" if m else "")
    return out + (f"{round(s, 3):g}S" if round(s, 3) or out == "PT" else "")


def _database_id(conn: sqlite3.Connection) -> str:
    return conn.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()[0]


def statements_for(conn: sqlite3.Connection, rules: Rules, *, trainee: str | None = None,
                   since: str | None = None, drop_names: bool = False) -> list[dict]:
    """All statements for the selected attempts, in time order."""
    db_id = _database_id(conn)
    people = {r["id"]: r for r in conn.execute("SELECT id, name FROM trainees")}
    bounds = {}
    for r in rules.tasks:
        experts = (query_attempts(conn, procedure=r.procedure, cohort=r.expert_cohort)
                   if r.style == "benchmark" else [])
        bounds[r.procedure] = (r, target_bounds(r, experts))
    out = []
    for a in query_attempts(conn, trainee=trainee, since=since):
        row = attempt_row(conn, a.id)
        result = json.loads(row["result_json"]) if row["result_json"] else {}
        name = None if drop_names else people[a.trainee_id]["name"]
        passed = a.passed
        if passed is None and a.complete and a.task in bounds and bounds[a.task][1] is not None:
            passed = attempt_meets(bounds[a.task][0], bounds[a.task][1], a)
        out += attempt_statements(rules.iri_base, db_id, row, result, name=name, passed=passed)
    return out


def attempt_statements(iri_base: str, db_id: str, row: sqlite3.Row, result: dict, *,
                       name: str | None, passed: bool | None) -> list[dict]:
    """cmi5-ordered statements for one stored attempt (row: an attempts row)."""
    registration = str(uuid.uuid5(NAMESPACE, f"{db_id}/attempt/{row['id']}"))
    actor = {"objectType": "Agent", "account": {"homePage": iri_base, "name": row["trainee_id"]}}
    if name:
        actor["name"] = name
    activity = {"objectType": "Activity", "id": f"{iri_base}/activities/{row['procedure']}",
                "definition": {"name": {"en-US": row["procedure"].replace("_", " ")},
                               "type": "http://adlnet.gov/expapi/activities/simulation"}}
    started = row["started"]
    ended = row["ended"]
    if ended is None and row["recording_path"] and os.path.exists(row["recording_path"]):
        # a killed session never wrote its end: the recording's last write is the best we know
        ended = datetime.fromtimestamp(os.path.getmtime(row["recording_path"])).astimezone().isoformat()
    duration_s = result.get("duration_s")
    if duration_s is None:
        duration_s = ((datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
                      if ended else 0.0)
    # a metric a procedure could not compute is NaN in its result; JSON (and so an LRS) has no NaN
    extensions = {f"{iri_base}/metrics/{k}": m["value"] for k, m in result.get("metrics", {}).items()
                  if isinstance(m.get("value"), int | float) and math.isfinite(m["value"])}
    if result.get("errors"):
        extensions[f"{iri_base}/errors"] = [e.get("kind") for e in result["errors"]]

    def stmt(verb: str, when: str, res: dict | None = None, moveon: bool = False) -> dict:
        cats = [{"id": CMI5_CATEGORY}] + ([{"id": MOVEON_CATEGORY}] if moveon else [])
        s = {"id": str(uuid.uuid5(NAMESPACE, f"{registration}/{verb}")), "actor": actor,
             "verb": {"id": VERBS[verb], "display": {"en-US": verb}}, "object": activity,
             "timestamp": when,
             "context": {"registration": registration,
                         "contextActivities": {"category": cats},
                         "extensions": {SESSION_EXT: registration,
                                        f"{iri_base}/extensions/procedure_version": row["version"],
                                        f"{iri_base}/extensions/attempt": row["id"]}}}
        if res is not None:
            s["result"] = res
        return s

    dur = iso_duration(float(duration_s))
    out = [stmt("launched", started), stmt("initialized", started)]
    if row["status"] == "incomplete":
        out.append(stmt("abandoned", ended or started, {"duration": dur}))
        return out
    end = ended or started
    if row["status"] == "success":
        out.append(stmt("completed", end, {"completion": True, "duration": dur}, moveon=True))
    if passed is not None:
        res = {"success": bool(passed), "completion": row["status"] == "success", "duration": dur,
               "extensions": extensions}
        if row["score"] is not None:
            raw = float(row["score"])
            res["score"] = {"scaled": round(min(max(raw / 100.0, 0.0), 1.0), 4), "raw": raw,
                            "min": 0, "max": 100}
        out.append(stmt("passed" if passed else "failed", end, res, moveon=bool(passed)))
    out.append(stmt("terminated", end, {"duration": dur}))
    return out


def _request(url: str, *, user: str | None, password: str | None, data: bytes | None = None,
             method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Experience-API-Version", XAPI_VERSION)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace")
        if exc.code in (401, 403):
            raise UserError(f"LRS at {url} refused the credentials (HTTP {exc.code})") from None
        return exc.code, body.encode()
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach the LRS at {url}: {getattr(exc, 'reason', exc)}") from None


def _endpoint(lrs: str) -> str:
    u = urllib.parse.urlparse(lrs)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise UserError(f"--lrs must be an http(s) URL, got {lrs!r}")
    base = lrs.rstrip("/")
    return base if base.endswith("/statements") else base + "/xAPI/statements"


def send(lrs: str, statements: list[dict], *, user: str | None = None, password: str | None = None) -> int:
    """POST the statements in batches; returns how many the LRS accepted. Statements it already holds
    (same id and content: an earlier export) are accepted without being stored twice, so exporting
    twice is harmless; an LRS that answers 409 instead gets them one by one with PUT."""
    url = _endpoint(lrs)
    sent = 0
    for i in range(0, len(statements), BATCH):
        batch = statements[i:i + BATCH]
        code, body = _request(url, user=user, password=password,
                              data=json.dumps(batch, allow_nan=False).encode(),
                              method="POST")
        if code in (200, 204):
            sent += len(batch)
            continue
        if code != 409:
            raise UserError(f"LRS at {url} rejected the statements (HTTP {code}): "
                            f"{body.decode('utf-8', 'replace')}")
        # Some statement ids exist already: send one by one with PUT, which is idempotent per id.
        for s in batch:
            q = urllib.parse.urlencode({"statementId": s["id"]})
            code, body = _request(f"{url}?{q}", user=user, password=password,
                                  data=json.dumps(s).encode(), method="PUT")
            if code in (200, 204):
                sent += 1
            elif code != 409:
                raise UserError(f"LRS at {url} rejected statement {s['id']} (HTTP {code}): "
                                f"{body.decode('utf-8', 'replace')}")
    return sent


def query(lrs: str, *, user: str | None = None, password: str | None = None, **params: str) -> list[dict]:
    """GET statements back (xAPI query parameters, e.g. registration=...), following `more` links."""
    url = _endpoint(lrs)
    nxt = f"{url}?{urllib.parse.urlencode(params)}" if params else url
    out = []
    while nxt:
        code, body = _request(nxt, user=user, password=password)
        if code != 200:
            raise UserError(f"LRS at {url}: query failed (HTTP {code})")
        doc = json.loads(body)
        out += doc.get("statements", [])
        more = doc.get("more")
        nxt = urllib.parse.urljoin(url, more) if more else ""
    return out
