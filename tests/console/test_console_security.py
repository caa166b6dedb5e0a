"""The console refuses the obvious bad requests with a 4xx and changes nothing: no login, another
trainee's record, a forged form, an oversized message, path traversal in recording names. Real server,
real SQLite files, a real guide channel in shared memory."""

from __future__ import annotations

import os
import sqlite3

import pytest
from console_helpers import PASSWORD, Client, Server, cli, records_with_attempts

from sim.runtime.share import GuideChannel, register


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    recs = tmp / "recordings"
    recs.mkdir()
    (recs / "ok.trec").write_bytes(b"TRCREC01")
    (tmp / "secret.trec").write_bytes(b"TRCREC01")
    ids = records_with_attempts(tmp / "records.sqlite3")
    runtime = tmp / "run"
    runtime.mkdir()
    guide = GuideChannel.create()
    # A registration whose process is this test: the console treats it as a live shared session.
    register({"id": "20260101-000000-1", "pid": os.getpid(), "scene": "peg_transfer", "device": "emu",
              "mailbox": "none", "layout": {}, "description": {}, "guide": list(guide.names),
              "started": "now"}, runtime)
    server = Server(tmp, records=tmp / "records.sqlite3", runtime=runtime, recordings=recs)
    yield server, ids, guide, tmp
    server.close()
    guide.close()


def _guide_state(guide):
    s = guide.read()
    return (s["message_id"], s["mark_id"], s["paused"])


def test_pages_need_a_login(setup):
    server, ids, guide, _ = setup
    c = Client(server.base)
    assert c.get("/")[0] == 303  # to /login
    assert c.get("/trainee/R-001/report")[0] == 401
    assert c.get(f"/review/attempt/{ids['R-001']}/frame?t=0")[0] == 401
    assert c.post("/live/20260101-000000-1/message", {"text": "hi", "csrf": "x"})[0] == 401
    assert _guide_state(guide) == (0, 0, False)


def test_wrong_password_and_forged_login_form_do_not_log_in(setup):
    server, *_ = setup
    c = Client(server.base)
    assert c.login("teach", "wrong password") != 200
    c2 = Client(server.base)
    status, _, _ = c2.post("/login", {"csrf": "forged", "name": "teach", "password": PASSWORD})
    assert status == 403
    assert c2.get("/")[0] == 303


def test_trainee_sees_only_own_records(setup):
    server, ids, *_ = setup
    c = Client(server.base)
    assert c.login("r1") == 200
    status, page, _ = c.get("/")
    assert status == 200 and "R-001" in page and "R-002" not in page
    assert "Live sessions" not in page
    assert c.get("/trainee/R-001/report")[0] == 200
    assert c.get("/trainee/R-002/report")[0] == 403
    assert c.get(f"/review/attempt/{ids['R-002']}")[0] == 404
    assert c.get("/cohort/C1/report")[0] == 403
    assert c.get("/live/20260101-000000-1")[0] == 403


def test_instructor_sees_everyone_and_the_shared_session(setup):
    server, *_ = setup
    c = Client(server.base)
    assert c.login("teach") == 200
    status, page, _ = c.get("/")
    assert status == 200 and "R-001" in page and "R-002" in page and "20260101-000000-1" in page
    status, page, _ = c.get("/?cohort=C1&task=peg_transfer")
    assert status == 200 and "R-002" in page
    assert c.get("/cohort/C1/report")[0] == 200


def test_forged_and_oversized_forms_change_nothing(setup):
    server, _, guide, _ = setup
    c = Client(server.base)
    assert c.login("teach") == 200
    sid = "/live/20260101-000000-1"
    before = _guide_state(guide)
    assert c.post(sid + "/message", {"text": "hello", "csrf": "forged"})[0] == 403
    assert c.post(sid + "/message", {"text": "hello"})[0] == 403
    assert c.post(sid + "/pause", {"paused": "1", "csrf": "forged"})[0] == 403
    token = c.csrf()
    assert c.post(sid + "/message", {"text": "x" * 281, "csrf": token})[0] == 400
    assert c.post(sid + "/message", {"text": "x" * 5000, "csrf": token})[0] == 413
    assert c.post(sid + "/mark", {"x": "2", "y": "0.5", "csrf": token})[0] == 400
    assert c.post(sid + "/pause", {"paused": "maybe", "csrf": token})[0] == 400
    assert c.post("/live/../../etc/message", {"text": "hi", "csrf": token})[0] == 404
    assert _guide_state(guide) == before
    # The same requests done right do change it: the checks above can fail.
    assert c.post(sid + "/message", {"text": "less traction", "csrf": token})[0] == 200
    assert c.post(sid + "/pause", {"paused": "1", "csrf": token})[0] == 200
    state = guide.read()
    assert state["message"] == "less traction" and state["paused"]
    guide.set_paused(False)


def test_recording_names_cannot_leave_the_recordings_folder(setup):
    server, *_ = setup
    c = Client(server.base)
    assert c.login("teach") == 200
    for name in ("..%2Fsecret.trec", "%2E%2E%2Fsecret.trec", "..%252Fsecret.trec", "secret",
                 "%2Fetc%2Fpasswd", ".hidden.trec"):
        assert c.get(f"/review/recording/{name}")[0] == 404, name
    assert c.get("/review/recording/../secret.trec")[0] == 404


def test_accounts_store_no_plain_password_and_cli_refuses_bad_input(setup):
    server, _, _, tmp = setup
    conn = sqlite3.connect(server.users)
    blob = b"".join(bytes(r[0]) for r in conn.execute("SELECT hash FROM users"))
    conn.close()
    assert PASSWORD.encode() not in blob and len(blob) == 64
    r = cli("console-user", "add", "x", "--role", "trainee", "--password-stdin", "--users",
            str(tmp / "console.sqlite3"), input=PASSWORD + "\n")
    assert r.returncode == 2 and r.stderr.startswith("trocar: error: ") and r.stderr.count("\n") == 1
    r = cli("serve", "--host", "not a host")
    assert r.returncode == 2 and "trocar: error:" in r.stderr


def test_frame_websocket_needs_an_instructor_from_the_consoles_own_origin(setup):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server, *_ = setup
    url = server.base.replace("http", "ws") + "/live/20260101-000000-1/ws"
    cookies = {}
    for name in ("teach", "r1"):
        c = Client(server.base)
        assert c.login(name) == 200
        cookies[name] = next(f"{k.name}={k.value}" for k in c.jar if k.name == "trocar_session")
    for headers, origin in (({}, server.base), ({"Cookie": cookies["r1"]}, server.base),
                            ({"Cookie": cookies["teach"]}, "http://evil.example")):
        try:
            with connect(url, additional_headers=headers, origin=origin, open_timeout=30):
                raise AssertionError(f"connected with {headers} from {origin}")
        except InvalidStatus as exc:
            assert exc.response.status_code == 403
