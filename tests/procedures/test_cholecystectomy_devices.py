"""The cholecystectomy played with two emulated devices (real ptys, emulator processes): the
right hand holds the clip applier and the scissors; the procedure's emulated hands move in the air
in front of the scope, so nothing tears, resets or fires.

(Forces are not checked here: in lockstep the emulators' hands move in wall time while the scene
runs slower than real time, so the targets jump between ticks; the bimanual tests check forces.)"""

from __future__ import annotations

import numpy as np

from sim.runtime.config import RunConfig
from sim.runtime.lockstep import emulator_hands, run_lockstep
from sim.runtime.recording import read_recording


def test_two_emulated_devices_play_the_cholecystectomy_without_tears_or_kicks(tmp_path):
    rec = str(tmp_path / "chole.trec")
    cfg = RunConfig(scene="cholecystectomy", device="emu,emu", seconds=3.0, record=rec, lockstep=True,
                    soft_start_s=0.1)
    assert len(emulator_hands(cfg)) == 2  # the procedure's hands, not the tissue pad's circles
    run_lockstep(cfg)
    r = read_recording(rec)
    assert [h["instruments"] for h in r.meta["hands"]] == [[0], [1, 2]]  # right: applier, scissors
    kinds = [e[1] for e in r.events]
    assert not {"tear", "tissue_reset", "clip_missed", "cut"} & set(kinds), kinds
    t = r.ticks
    up = np.all(t["dev_flags"][:, :2] & 2, axis=1)
    assert up.mean() > 0.5
    # The hands moved the instruments (1 cm circles at scale 1.5), the scissors waited at the port.
    k0 = int(np.argmax(up))
    moved = np.linalg.norm(t["tool_pose"][k0:, :, :3] - t["tool_pose"][k0, :, :3], axis=2).max(axis=0)
    assert (moved[:2] > 0.005).all() and moved[2] < 1e-3, moved
