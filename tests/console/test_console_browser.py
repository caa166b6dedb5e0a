"""The console in a real browser (Debian's chromium, headless, over the DevTools protocol): log in, see
the dashboard, watch a live session the test starts (`trocar run peg_transfer --device emu --share`,
headless), receive frames that change, send a message that reaches the session's HUD, pause and resume
it, then replay the stored attempt from its recording."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cdp import Browser, chromium
from console_helpers import PASSWORD, ROOT, Server, records_with_attempts

SESSION_S = 600  # the shared session's limit [s]; the review test stops it with Ctrl-C (SIGINT)
SHOTS = os.environ.get("TROCAR_CONSOLE_SHOTS")  # a folder to keep the screenshots in, if set

if chromium() is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("chromium is required under CI (scripts/setup-render-deps.sh)")
    pytest.skip("chromium is not installed (scripts/setup-render-deps.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    xdg = tmp / "xdg"
    xdg.mkdir(mode=0o700)
    runtime = xdg / "trocar" / "sessions"
    record = tmp / "live.trec"
    log = open(tmp / "run.log", "w")
    session = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "run", "peg_transfer", "--device", "emu", "--display", "headless",
         "--share", "--seconds", str(SESSION_S), "--rate-mode", "realtime", "--record", str(record)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(xdg)))
    # A scored attempt with events to jump to: the expert policy, 4 s of lockstep.
    expert = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "run", "peg_transfer", "--policy", "expert", "--lockstep",
         "--seconds", "4", "--record", str(tmp / "expert.trec")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    records_with_attempts(tmp / "records.sqlite3")
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = Server(tmp, records=tmp / "records.sqlite3", runtime=runtime)
    browser = Browser()
    yield {"tmp": tmp, "server": server, "browser": browser, "session": session, "record": record,
           "runtime": runtime, "expert": expert}
    browser.close()
    server.close()
    for p in (session, expert):
        if p.poll() is None:
            p.terminate()
            p.wait(30)
    log.close()


def shot(env, name: str) -> None:
    path = Path(SHOTS or env["tmp"]) / f"{name}.png"
    env["browser"].screenshot(path)


def test_login_and_dashboard(env):
    b, server = env["browser"], env["server"]
    b.goto(server.base + "/")
    assert b.eval("location.pathname") == "/login"
    b.eval(f"document.getElementById('name').value = 'teach';"
           f"document.getElementById('password').value = {PASSWORD!r};"
           "document.getElementById('login').submit(); true")
    b.wait("location.pathname === '/' && document.getElementById('trainee-table') !== null", 60)
    rows = b.eval("[...document.querySelectorAll('tr.trainee')].map(r => r.dataset.id)")
    assert rows == ["R-001", "R-002"]
    assert b.eval("document.querySelectorAll('tr.attempt').length") == 2
    assert "training" in b.eval("document.getElementById('trainee-table').innerText")
    shot(env, "dashboard")


def test_live_session_streams_takes_a_message_and_pauses(env):
    b, server = env["browser"], env["server"]
    # The session registers once its servo is ready (compiling takes a while on a small machine).
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(env["runtime"].glob("*.json")):
        assert env["session"].poll() is None, (env["tmp"] / "run.log").read_text()
        time.sleep(0.5)
    from sim.render.hud import instructor_quads
    from sim.runtime.mailbox import SnapshotMailbox
    from sim.runtime.share import list_sessions
    from sim.runtime.step import decode_hud

    reg = list_sessions(env["runtime"])[0]
    box = SnapshotMailbox.attach(reg["mailbox"], {k: (tuple(s), d) for k, (s, d) in reg["layout"].items()})
    b.goto(server.base + "/")
    href = b.wait("(document.querySelector('a.live-link') || {}).href", 10)
    b.goto(href)
    b.wait("window.trocarFrames >= 1", 120)
    tick0 = int(b.eval("document.getElementById('view').dataset.tick"))
    b.wait(f"window.trocarFrames >= 4 && Number(document.getElementById('view').dataset.tick) > {tick0}", 60)
    assert b.eval("document.getElementById('instruction').textContent").startswith("Lift each object")
    # The canvas is not one flat colour: a picture arrived.
    spread = b.eval("(() => { const d = document.getElementById('view').getContext('2d')"
                    ".getImageData(0, 0, 640, 360).data; let lo = 255, hi = 0;"
                    "for (let i = 0; i < d.length; i += 4 * 97) {"
                    "  lo = Math.min(lo, d[i + 1]); hi = Math.max(hi, d[i + 1]); }"
                    "return hi - lo; })()")
    assert spread > 40

    text = "less traction, left hand"
    b.eval(f"document.getElementById('message').value = {text!r};"
           "document.getElementById('message-form').requestSubmit(); true")
    b.wait(f"document.getElementById('delivered').textContent.includes({text!r})", 20)
    # The trainee's side: the session's own snapshot mailbox now carries it for its HUD.
    hud = decode_hud(box.read()["hud"])
    assert hud["instructor"]["message"] == text
    assert len(instructor_quads(hud["instructor"], 640, 360)) > 20  # the banner's text is drawn
    b.eval("document.getElementById('view').dispatchEvent(new MouseEvent('click', "
           "{clientX: document.getElementById('view').getBoundingClientRect().left + 320, "
           "clientY: document.getElementById('view').getBoundingClientRect().top + 180})); true")
    deadline = time.monotonic() + 20  # the mark reaches the session's HUD too: a cross mid-view
    while abs((decode_hud(box.read()["hud"])["instructor"].get("mark") or [0, 0])[0] - 0.5) > 0.01:
        assert time.monotonic() < deadline, "the mark did not reach the session"
        time.sleep(0.2)
    shot(env, "live")

    b.eval("document.getElementById('pause').click(); true")
    b.wait("document.getElementById('status').textContent === 'paused'", 20)
    held = int(b.eval("document.getElementById('view').dataset.tick"))
    frames = b.eval("window.trocarFrames")
    b.wait(f"window.trocarFrames >= {frames + 2}", 30)  # frames keep coming while paused...
    assert int(b.eval("document.getElementById('view').dataset.tick")) == held  # ...the scene holds
    b.eval("document.getElementById('pause').click(); true")
    b.wait(f"Number(document.getElementById('view').dataset.tick) > {held}", 30)
    box.close()


def _store(env, record: str) -> int:
    from trainees.records import begin_attempt, finish_attempt

    db = env["tmp"] / "records.sqlite3"
    aid = begin_attempt(db, "R-001", "peg_transfer", "1", recording=record)
    result = Path(record + ".result.json")
    finish_attempt(db, aid, result.read_text() if result.exists() and result.stat().st_size else
                   '{"status": "incomplete", "metrics": {}, "errors": []}', recording_path=record)
    return aid


def test_replay_the_live_attempt(env):
    b, server = env["browser"], env["server"]
    from sim.runtime.recording import read_recording

    env["session"].send_signal(signal.SIGINT)  # the trainee stops the session
    deadline = time.monotonic() + 120
    # The servo closes the recording (END chunk) first; `trocar run` then scores the procedure by
    # re-running the recording, which takes a while: the attempt is stored from the recording alone.
    while read_recording(str(env["record"])).end is None:
        assert time.monotonic() < deadline, "the session did not close its recording"
        time.sleep(0.5)
    aid = _store(env, str(env["record"]))
    b.goto(server.base + "/")
    b.wait("[...document.querySelectorAll('a.review-link')]"
           f".some(a => a.href.endsWith('/review/attempt/{aid}'))")
    b.goto(f"{server.base}/review/attempt/{aid}")
    b.wait("window.trocarFrames >= 1", 180)
    assert float(b.eval("document.getElementById('view').dataset.t")) < 0.5
    b.eval("document.getElementById('scrub').value = 3; document.getElementById('scrub')"
           ".dispatchEvent(new Event('input')); true")
    b.wait("Math.abs(Number(document.getElementById('view').dataset.t) - 3) < 0.05", 180)
    shot(env, "review")


def test_review_timeline_jumps_to_an_event(env):
    b, server = env["browser"], env["server"]
    env["expert"].wait(300)  # exit status 1: cut at 4 s, the attempt is incomplete (and scored so)
    assert (env["tmp"] / "expert.trec.result.json").exists()
    aid = _store(env, str(env["tmp"] / "expert.trec"))
    b.goto(f"{server.base}/review/attempt/{aid}")
    b.wait("window.trocarFrames >= 1", 180)
    labels = b.eval("[...document.querySelectorAll('a.event')].map(a => a.textContent)")
    assert any("grasp_object" in x for x in labels) and any("release_object" in x for x in labels)
    assert b.eval("document.querySelectorAll('#metrics tr').length") > 5  # the result's metrics
    k = next(i for i, x in enumerate(labels) if "release_object" in x)
    t = float(labels[k].split()[0])
    b.eval(f"document.querySelectorAll('a.event')[{k}].click(); true")
    b.wait(f"Math.abs(Number(document.getElementById('view').dataset.t) - {t}) < 0.01", 180)
    assert b.eval("document.getElementById('t').textContent") == f"{t:.1f}"
    shot(env, "review_event")
