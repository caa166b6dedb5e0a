"""The scripted cholecystectomy hands through the device path (issue 15): the expert clips and
divides both structures and passes; the novice over-pulls the gallbladder (a tear) and fails; a
recorded attempt replays to the same result."""

from __future__ import annotations

import json
import subprocess
import sys

from procedures.cholecystectomy import TARGET_TIME_S
from sim.damage import TEAR_MATERIALS
from sim.runtime.recording import read_recording


def trocar(*args, timeout=900):
    # (The procedure session runs the tissue kernels on one Numba thread itself: two threads on a
    # busy 2-core machine made this attempt take > 15 min instead of ~1.)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_expert_passes_and_its_recording_replays(tmp_path):
    rec = tmp_path / "chole.trec"
    p = trocar(
        "run", "cholecystectomy", "--policy", "expert", "--lockstep", "--seed", "0", "--record", str(rec)
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads((tmp_path / "chole.trec.result.json").read_text())
    assert result["status"] == "success" and result["passed"], result
    m = result["metrics"]
    assert m["clips"]["value"] == 6 and m["clip_span"]["value"] == 1.0
    assert m["clip_angle"]["value"] < 30.0  # square to the duct and the artery
    assert m["tears"]["value"] == 0
    kinds = [e["kind"] for e in result["errors"]]
    assert not {"clip_on_cbd", "cut_on_cbd", "divided_unsecured", "clip_outside_zone"} & set(kinds)
    events = [e[1] for e in read_recording(str(rec)).events]
    assert "tissue_reset" not in events
    assert events.count("clip_applied") == 6 and events.count("cut") >= 2
    r = trocar("replay", str(rec))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "result equals the recorded one" in r.stdout


def test_novice_fails():
    from procedures.policies import make_hands
    from sim.runtime.procedure_session import ProcedureAttempt

    # Past the proficiency time the attempt cannot pass any more: stop there.
    att = ProcedureAttempt(
        "cholecystectomy", make_hands("novice", 0, "cholecystectomy"), seed=0, max_s=TARGET_TIME_S + 0.5
    )
    try:
        att.run()
        res = att.procedure.result(att.trace())
    finally:
        att.close()
    assert not res.passed and not res.proficiency["met"]
    assert res.duration_s > TARGET_TIME_S or res.status != "success"
    assert not any(e.kind == "tissue_reset" for e in att.scene.events)
    # Its over-traction tore the infundibulum out of the grasper's jaws at the gallbladder's tear
    # force, it was scored, and the hand grasped it again.
    tears = [e for e in att.scene.events if e.kind == "tear"]
    threshold = TEAR_MATERIALS["gallbladder"].tear_force
    assert len(tears) == 1 and abs(tears[0].value - threshold) <= 0.1 * threshold, tears
    assert res.metrics["tears"].value == 1 and "tear" in [e.kind for e in res.errors]
    assert [e.kind for e in att.scene.events if e.tick > tears[0].tick].count("grasp") == 1
