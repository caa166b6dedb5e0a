"""`trocar run peg_transfer --policy ...`: result JSON next to the recording, a replayable recording."""

import json
import subprocess
import sys

from sim.runtime.recording import read_recording


def trocar(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_writes_the_result_next_to_a_recording_that_replays(tmp_path):
    rec = tmp_path / "attempt.trec"
    p = trocar("run", "peg_transfer", "--policy", "expert", "--lockstep", "--seconds", "4",
               "--record", str(rec))
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


def test_bad_procedure_input_is_one_error_line():
    p = trocar("run", "default", "--policy", "expert", "--lockstep", "--seconds", "1")
    assert p.returncode == 2
    assert p.stderr.strip().startswith("trocar: error:") and len(p.stderr.strip().splitlines()) == 1
    p = trocar("bench", "validity", "nosuch", "--episodes", "2")
    assert p.returncode == 2 and p.stderr.startswith("trocar: error: unknown procedure")
