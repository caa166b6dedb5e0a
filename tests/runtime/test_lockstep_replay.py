"""Lockstep determinism, the recording round trip, and replay of damaged recordings."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import trocar_in_process

from sim.runtime.config import RunConfig
from sim.runtime.lockstep import replay, run_lockstep
from sim.runtime.recording import RecordingWriter, read_recording

SECONDS = 0.2  # 200 ticks of the 1000-tet scene


def _device_path(tmp_path) -> str:
    """A scripted hand: the grasper sweeps down and sideways (device frame [m])."""
    from haptics.device import DeviceSample, ReplayDevice

    n = 400
    s = np.linspace(0.0, 1.0, n)
    samples = [DeviceSample(t=i * 1e-3, position=np.array([0.03 * si, 0.05 * si, -0.02 * si]),
                            gripper=0.2 + 0.3 * si) for i, si in enumerate(s)]
    path = str(tmp_path / "hand.npz")
    ReplayDevice.save(path, samples)
    return path


def _run(tmp_path, name: str, hand: str) -> tuple[dict, str]:
    rec = str(tmp_path / f"{name}.trec")
    cfg = RunConfig(device=f"replay:{hand}", seconds=SECONDS, record=rec, lockstep=True,
                    overrides={"tissue_tets": 1000}, checksum_every=50)
    return run_lockstep(cfg), rec


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lockstep")
    hand = _device_path(tmp)
    return hand, _run(tmp, "a", hand)


def test_two_lockstep_runs_with_the_same_inputs_are_bit_identical(recorded, tmp_path):
    hand, (report_a, rec_a) = recorded
    report_b, rec_b = _run(tmp_path, "b", hand)
    assert report_a["checksum"] == report_b["checksum"]
    a, b = read_recording(rec_a), read_recording(rec_b)
    assert a.checksums == b.checksums and len(a.checksums) == 4
    assert np.array_equal(a.ticks["targets"], b.ticks["targets"])
    # the hand moved the tool: the targets are not the start pose
    assert np.ptp(a.ticks["targets"][:, 0, 2]) > 0.005


def test_recording_holds_config_versions_ticks_and_a_closing_end_chunk(recorded):
    _, (_, rec) = recorded
    r = read_recording(rec)
    assert r.damage is None and r.complete
    assert r.meta["scene"] == "default" and r.meta["overrides"] == {"tissue_tets": 1000}
    assert r.meta["versions"]["numpy"] == np.__version__ and "pybullet" in r.meta["versions"]
    assert r.meta["seed"] == 0 and r.meta["device"].startswith("replay:")
    assert np.array_equal(r.ticks["tick"], np.arange(200))
    assert np.all(r.ticks["dev_flags"] & 2)  # connected samples on every tick


def test_replay_reproduces_every_recorded_checksum(recorded, capsys):
    _, (report, rec) = recorded
    r = replay(rec)
    assert r.ok and r.mismatch is None and r.checked == 4 and r.ticks == 200 and r.complete
    p = trocar_in_process(capsys, "replay", rec)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "200 ticks, 4 checksums equal" in p.stdout


def test_truncated_recording_replays_up_to_the_damage_and_says_where(recorded, tmp_path, capsys):
    _, (_, rec) = recorded
    data = open(rec, "rb").read()
    cut = tmp_path / "cut.trec"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    r = read_recording(str(cut))
    assert r.damage is not None and "truncated" in r.damage and "at byte" in r.damage
    p = trocar_in_process(capsys, "replay", str(cut))
    assert p.returncode == 3, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith(f"replay: damaged recording: {cut}: chunk ")
    assert "truncated" in lines[-1] and f"replayed up to tick {len(r.ticks) - 1}" in lines[-1]
    assert len(r.ticks) < 200


def _small_chunk_recording(tmp_path) -> str:
    """100 ticks in 16-row TICKS chunks (chunking of a real session depends on wall time)."""
    path = str(tmp_path / "chunks.trec")
    w = RecordingWriter(path, {"mode": "lockstep"}, 2, capacity=16)
    for k in range(100):
        i = w.next_row()
        w.fields["tick"][i] = k
        w.fields["targets"][i] = k * 1e-3
    w.close({"reason": "end"})
    return path


def test_truncated_recording_reads_every_whole_chunk_before_the_cut(tmp_path):
    path = _small_chunk_recording(tmp_path)
    good = read_recording(path)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.trec"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    r = read_recording(str(cut))
    assert r.damage is not None and "truncated" in r.damage and "at byte" in r.damage
    assert 0 < len(r.ticks) < len(good.ticks)
    assert np.array_equal(r.ticks, good.ticks[: len(r.ticks)])
    assert r.valid_bytes <= int(len(data) * 0.6)


def test_corrupted_chunk_reads_up_to_it_with_a_crc_message(tmp_path):
    path = _small_chunk_recording(tmp_path)
    good = read_recording(path)
    assert good.damage is None and len(good.ticks) == 100
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.trec"
    bad.write_bytes(bytes(data))
    r = read_recording(str(bad))
    assert r.damage is not None and "CRC mismatch" in r.damage and "at byte" in r.damage
    assert 0 < len(r.ticks) < len(good.ticks)
    assert np.array_equal(r.ticks, good.ticks[: len(r.ticks)])


def test_corrupted_session_replays_up_to_the_damage_with_exit_3(recorded, tmp_path, capsys):
    _, (_, rec) = recorded
    data = bytearray(open(rec, "rb").read())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.trec"
    bad.write_bytes(bytes(data))
    p = trocar_in_process(capsys, "replay", str(bad))
    assert p.returncode == 3 and "CRC mismatch" in p.stdout


def test_replay_reports_a_checksum_mismatch_with_exit_1(tmp_path, capsys):
    from sim.runtime.config import session_meta
    from sim.runtime.devices import WorkspaceMap
    from sim.scene import build_scene

    cfg = RunConfig(overrides={"tissue_tets": 0})
    with build_scene("default", tissue_tets=0) as scene:
        meta = session_meta(cfg, scene, WorkspaceMap.for_scene(scene), "lockstep")
        hold = scene.hold_control()
    path = str(tmp_path / "forged.trec")
    w = RecordingWriter(path, meta, 2)
    for k in range(10):
        i = w.next_row()
        w.fields["tick"][i] = k
        w.fields["targets"][i] = hold.targets
    w.checksum(9, "0" * 64)
    w.close({"reason": "end"})
    p = trocar_in_process(capsys, "replay", path)
    assert p.returncode == 1 and "MISMATCH after tick 9" in p.stdout
