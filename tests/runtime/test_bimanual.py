"""Two devices at once, one per hand, over real ptys (two emulator processes): each drives its own
tool and feels its own tool's force, in lockstep and in a real-time session; replay reproduces it."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import read_events, trocar_in_process

from sim.runtime.config import RunConfig
from sim.runtime.lockstep import run_lockstep
from sim.runtime.recording import read_recording

# The default scene without tissue (the cheapest two-tool world: these machines are busy). The left
# hand holds its handle 5 cm below the workspace centre: its grasper presses on the trainer floor.
# The right hand holds its handle 3 cm above: its scissors stay in the air.
PRESS = ("--hand", "circle", "--hand-radius", "0", "--hand-at", "0.0,0.02,-0.05")
AIR = ("--hand", "circle", "--hand-radius", "0", "--hand-at", "0.0,0.0,0.03")


def _check(rec_path: str, *, device_force: bool) -> None:
    r = read_recording(rec_path)
    t = r.ticks
    assert r.meta["n_hands"] == 2 and t["force"].shape[1:] == (2, 3)
    up = np.all(t["dev_flags"] & 2, axis=1)
    k0 = int(np.argmax(up))  # the devices open after the warm-up ticks
    # Both links up from then on (a starved emulator may miss the 50 ms link timeout now and then).
    assert len(t) - k0 > 60 and up[k0:].mean() > 0.9, (k0, len(t), up[k0:].mean())
    last = slice(-50, None)
    # What each hand was commanded, and what each device reports applying (STATE, over its pty).
    cmd = np.linalg.norm(t["force"][last], axis=2).mean(axis=0)
    assert cmd[0] > 1.0 and cmd[1] < 0.5 and cmd[1] < 0.1 * cmd[0], cmd
    # The hand in the air never pulled: its tool glided to it when the link came up (the target
    # jumping 45 mm in one tick once put 800 N of coupling damping on both tools).
    assert np.linalg.norm(t["force"][:, 1], axis=1).max() < 0.2
    if device_force:
        # The largest force each device reported once the links were up. (A maximum: on a loaded
        # machine a tick may come later than the device's 50 ms watchdog, which then ramps to zero.)
        applied = np.linalg.norm(t["dev_force"][k0:], axis=2).max(axis=0)
        assert applied[0] > 0.5 and applied[1] < 0.5 and applied[1] < 0.2 * applied[0], applied
    # Each device drove its own tool: the left tip went down, the right one up.
    z = t["tool_pose"][:, :, 2]
    assert z[-1, 0] < z[0, 0] - 0.01 and z[-1, 1] > z[0, 1] + 0.01


def test_two_emulated_devices_in_lockstep_each_feel_their_own_tool(tmp_path, capsys):
    rec = str(tmp_path / "bi.trec")
    cfg = RunConfig(overrides={"tissue_tets": 0}, device="emu,emu", seconds=1.5, record=rec,
                    lockstep=True, soft_start_s=0.1, hand_emu_args=(PRESS, AIR),
                    emu_event_log=str(tmp_path / "emu.log"))
    run_lockstep(cfg)
    # Lockstep does not keep the devices' 50 ms watchdogs fed on a slow machine (the ticks are not
    # paced): the force the devices report is checked in the real-time session below.
    _check(rec, device_force=False)
    # two emulator processes, each with its own event log
    assert "enable" in [n for _, n in read_events(tmp_path / "emu.log")]
    assert "enable" in [n for _, n in read_events(tmp_path / "emu.log.1")]
    p = trocar_in_process(capsys, "replay", rec)
    assert p.returncode == 0, p.stdout + p.stderr


AIR_UNTIL_S = 35.0  # [s after the emulator started] beyond a session's start-up on a loaded machine


@pytest.mark.parametrize("mode", ["realtime", "multirate"])
def test_two_emulated_devices_in_a_session_each_feel_their_own_tool(mode, tmp_path, capsys):
    # The left hand starts in the air and presses later: a device's soft start ramps its force in
    # only once the commanded force is small (it must not jump to a large force when it connects).
    # The per-hand hand models go through the config (the CLI has no flag for them).
    from sim.runtime.realtime import run_realtime

    script = tmp_path / "press.txt"
    script.write_text(f"0 0.0 0.0 0.03\n{AIR_UNTIL_S} 0.0 0.0 0.03\n{AIR_UNTIL_S + 2} 0.0 0.02 -0.05\n")
    rec = str(tmp_path / "rt.trec")
    cfg = RunConfig(overrides={"tissue_tets": 0}, device="emu,emu", seconds=AIR_UNTIL_S + 6, record=rec,
                    rate_mode=mode, soft_start_s=0.1, hand_emu_args=(("--hand", f"script:{script}"), AIR))
    summary = run_realtime(cfg, log=lambda line: None)
    assert summary["exitcode"] == 0, summary
    # Multirate: the haptic servo renders each hand's force from its local model; the physics
    # rows hold the coupling force per hand (the devices' own report is the servo's, not recorded).
    _check(rec, device_force=(mode == "realtime"))
    assert "rtt_p99_us" in summary["report"] and "rtt_p99_us_1" in summary["report"]
    # (replay of a two-hand recording: the lockstep test above; a minute of ticks is slow to replay)


def test_left_right_options_make_a_two_device_session(capsys):
    from sim.cli import main

    # validated before anything starts: a bad right-hand device is one error line, exit 2
    assert main(["run", "--left", "emu", "--right", "serial:/nonexistent/port", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trocar: error:") and "/nonexistent/port" in err[0]
    assert main(["run", "--device", "emu", "--left", "emu", "--seconds", "1"]) == 2
    assert main(["run", "--device", "emu,emu,emu", "--seconds", "1"]) == 2
