"""`trocar run peg_transfer --policy ...`: result JSON next to the recording, a replayable recording."""

import json
import subprocess
import sys

from sim.runtime.recording import read_recording


def trocar(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_run_writes_the_result_next_to_a_recording_that_replays(tmp_path):
    rec = tmp_path / "attempt.trec"
    p = trocar(
        "run", "peg_transfer", "--policy", "expert", "--lockstep", "--seconds", "4", "--record", str(rec)
    )
    assert p.returncode == 1, p.stderr  # stopped by --seconds before the end: incomplete
    result = json.loads((tmp_path / "attempt.trec.result.json").read_text())
    assert result["procedure"] == "peg_transfer" and result["status"] == "incomplete"
    assert result["metrics"]["path_length_left"]["unit"] == "m"
    assert "path length, left hand" in p.stdout  # the table
    events = read_recording(str(rec)).events
    grasps = [e for e in events if e[1] == "grasp_object"]
    assert grasps and all(len(e) == 6 and 0 <= e[5] < 6 for e in grasps)  # typed body index
    r = trocar("replay", str(rec))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "path length, left hand" in r.stdout  # the attempt's table, scored again from the replay
    assert "result equals the recorded one" in r.stdout
    # a result file that no longer matches what the recording replays to is reported
    result["score"] = result["score"] + 10.0
    (tmp_path / "attempt.trec.result.json").write_text(json.dumps(result))
    r = trocar("replay", str(rec))
    assert r.returncode == 1 and "MISMATCH: the replayed result differs" in r.stdout


def test_bad_procedure_input_is_one_error_line():
    p = trocar("run", "default", "--policy", "expert", "--lockstep", "--seconds", "1")
    assert p.returncode == 2
    assert p.stderr.strip().startswith("trocar: error:") and len(p.stderr.strip().splitlines()) == 1
    p = trocar("bench", "validity", "nosuch", "--episodes", "2")
    assert p.returncode == 2 and p.stderr.startswith("trocar: error: unknown procedure")


def test_metrics_from_the_recording_equal_the_live_ones(tmp_path):
    from procedures.policies import make_hands
    from sim.runtime.config import session_meta
    from sim.runtime.procedure_session import ProcedureAttempt, trace_from_recording
    from sim.runtime.recording import RecordingWriter

    path = str(tmp_path / "a.trec")
    att = ProcedureAttempt("peg_transfer", make_hands("expert", 0), max_s=3.0)
    try:
        rec = RecordingWriter(
            path, session_meta(att.cfg, att.scene, att.wmaps, "lockstep"), att.scene.n_tools, n_hands=2
        )
        att.session.recorder = rec
        for _ in range(2500):
            att.step()
        rec.close()
        live = att.procedure.result(att.trace())
        again = att.procedure.result(
            trace_from_recording(read_recording(path), att.scene.dt, att.procedure.tick0)
        )
        assert live.metrics["path_length_left"].value > 0.05  # the hands did move
        assert again.metrics == live.metrics
    finally:
        att.close()


def test_a_device_session_on_a_procedure_writes_its_result(tmp_path):
    rec = tmp_path / "null.trec"
    p = trocar(
        "run", "peg_transfer", "--device", "null,null", "--lockstep", "--seconds", "1", "--record", str(rec)
    )
    assert p.returncode == 0, p.stderr
    result = json.loads((tmp_path / "null.trec.result.json").read_text())
    assert result["status"] == "incomplete" and result["duration_s"] == 1.0
    assert result["metrics"]["drops"]["value"] == 0
