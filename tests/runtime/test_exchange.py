"""Instrument exchange through a real device: button 1 on an emulated handle (a real pty, the
emulator in another process) hands the driven instrument back and takes the next, in the
multirate session (the physics' step exchanges; the haptic servo follows it)."""

from __future__ import annotations

import numpy as np

from sim.runtime.config import RunConfig
from sim.runtime.devices import GLIDE_S
from sim.runtime.recording import read_recording

PERIOD_S = 4.0  # [s] the handle's button 1 is pressed for 0.3 s every PERIOD_S from 1 s on
HAND = (0.0, 0.0, 0.02)  # [m] device frame: the handle held 2 cm above the workspace centre


def test_button_1_on_an_emulated_handle_exchanges_the_instrument_in_a_multirate_session(tmp_path):
    from sim.runtime.realtime import run_realtime

    # The press pattern repeats, so whenever the session's start-up ends on a busy machine some
    # presses fall inside it (the emulator's clock starts before the session's).
    rows = []
    for k in range(40):
        t0 = 1.0 + k * PERIOD_S
        rows += [(t0 - 0.01, 0), (t0, 1), (t0 + 0.3, 1), (t0 + 0.31, 0)]
    script = tmp_path / "presses.txt"
    script.write_text("".join(f"{t:.3f} {HAND[0]} {HAND[1]} {HAND[2]} 0.3 {b}\n" for t, b in rows))
    rec = str(tmp_path / "x.trec")
    # The default scene without tissue: two graspers, one device, so the hand holds both.
    cfg = RunConfig(overrides={"tissue_tets": 0}, device="emu", seconds=2 * PERIOD_S + 1, record=rec,
                    rate_mode="multirate", soft_start_s=0.1, hand_emu_args=(("--hand", f"script:{script}"),))
    summary = run_realtime(cfg, log=lambda line: None)
    assert summary["exitcode"] == 0, summary
    r = read_recording(rec)
    assert r.meta["hands"][0]["instruments"] == [0, 1]
    t = r.ticks
    home = np.asarray(r.meta["hands"][0]["home"])[:, :3]
    up = (t["dev_flags"][:, 0] & 2) != 0
    pressed = up & ((t["dev_buttons"][:, 0] & 1) != 0)
    first_up = int(np.argmax(up))
    edges = [k for k in range(first_up + 1, len(t)) if pressed[k] and not pressed[k - 1]]
    settle = int(round(1.2 * GLIDE_S / r.meta["dt"]))
    checked = 0
    for n, e in enumerate(edges):
        k = e + settle
        if k >= len(t) or (n + 1 < len(edges) and edges[n + 1] <= k):
            continue
        new = (n + 1) % 2  # tool 0 first, then each press takes the other
        hand = home[new] + 1.5 * t["dev_pos"][k, 0]
        np.testing.assert_allclose(t["targets"][k, new, :3], hand, atol=1e-9)  # taken, at the hand
        np.testing.assert_allclose(t["targets"][k, 1 - new, :3], home[1 - new], atol=1e-9)  # handed back
        # the taken tool is where the hand put it (it moved through the air, nothing in the way)
        assert np.linalg.norm(t["tool_pose"][k, new, :3] - hand) < 2e-3
        checked += 1
    assert checked >= 1, (first_up, len(t), edges)
    # No kick: the handle never felt more than what gliding the tools costs.
    f = np.linalg.norm(t["force"][first_up:, 0], axis=1)
    assert f.max() < 0.5, f.max()
