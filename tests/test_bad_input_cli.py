"""Bad input to any `trocar` command (issue 11, item 8): one `trocar: error:` line, exit 2, no
traceback. One row per input a fault-injection trial had seen escape as a traceback.

Recordings are written here chunk by chunk in the documented format (docs/runtime.md) so that
each row holds exactly the META a user's file held.
"""

from __future__ import annotations

import json
import select
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from sim.mesh import TetMesh
from sim.mesh_generators import block
from sim.mesh_io import save_mesh
from sim.runtime.recording import FORMAT_VERSION, MAGIC, tick_dtype

N_TOOLS = 2


def _chunk(kind: int, body: bytes) -> bytes:
    return struct.pack("<IIB", len(body), zlib.crc32(body, zlib.crc32(bytes((kind,)))), kind) + body


def _good_meta() -> dict:
    dt = tick_dtype(N_TOOLS)
    spec = [[n, dt.fields[n][0].base.str, list(dt.fields[n][0].shape)] for n in dt.names]
    return {"format": FORMAT_VERSION, "mode": "lockstep", "scene": "default",
            "overrides": {"tissue_tets": 0}, "dt": 0.001, "n_tools": N_TOOLS, "seed": 0,
            "checksum_every": 100, "tick_dtype": spec}


def _recording(path, meta) -> str:
    rows = np.zeros(3, tick_dtype(N_TOOLS))
    rows["tick"] = np.arange(3)
    body = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    path.write_bytes(MAGIC + _chunk(1, body) + _chunk(2, rows.tobytes()) + _chunk(6, b"{}"))
    return str(path)


def _meta(**change) -> dict:
    m = _good_meta()
    for k, v in change.items():
        if v is _DROP:
            del m[k]
        else:
            m[k] = v
    return m


_DROP = object()

META_ROWS = {
    "other format version": _meta(format=FORMAT_VERSION + 1),
    "no scene": _meta(scene=_DROP),
    "scene not text": _meta(scene=5),
    "unknown scene": _meta(scene="nosuch"),
    "overrides not an object": _meta(overrides="tets=5"),
    "unknown override": _meta(overrides={"tissue_teeth": 3}),
    "seed not a number": _meta(seed="abc"),
    "n_tools zero": _meta(n_tools=0),
    "tick layout garbage": _meta(tick_dtype=[["tick", "<q8x", []]]),
    "tick layout of another tool count": _meta(n_tools=3),
    "more tools than the scene has": {**_meta(n_tools=3), "tick_dtype": [
        [n, tick_dtype(3).fields[n][0].base.str, list(tick_dtype(3).fields[n][0].shape)]
        for n in tick_dtype(3).names]},
    "config not an object": _meta(config=[1.5]),
    "META a list": ["default"],
    "META not JSON": b"\xff{",
}


def _floating_mesh(path) -> str:
    pad = block((0.05, 0.03, 0.02), (3, 2, 2))
    lone = np.array([[0.0, 0.0, 0.05], [0.01, 0.0, 0.05], [0.0, 0.01, 0.05], [0.0, 0.0, 0.06]])
    pts = np.vstack([pad.points, lone])
    n = len(pad.points)
    tets = np.vstack([pad.tets, [[n, n + 1, n + 2, n + 3]]]).astype(np.int32)
    save_mesh(path, TetMesh(pts, tets))
    return str(path)


def _flat_mesh(path) -> str:
    # Valid tets (not degenerate relative to their size) but 1 nm high: all of it is "floor".
    save_mesh(path, block((0.05, 0.03, 1e-9), (3, 2, 1)))
    return str(path)


@pytest.fixture
def trocar(capsys):
    """Run `trocar ARGS` in this process (sim.cli.main, as the console script does); returns
    (exit status, stdout, stderr). An exception escaping main() fails the test."""
    from sim.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_error_line(r, *needles):
    code, out, err = r
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("name", list(META_ROWS))
def test_replay_of_a_recording_with_bad_meta_is_one_error_line(trocar, tmp_path, name):
    path = _recording(tmp_path / "s.trec", META_ROWS[name])
    assert_one_error_line(trocar("replay", path), "s.trec")


@pytest.mark.parametrize("cmd", [("mesh", "check"), ("demo", "--seconds", "0.05", "--mesh")])
@pytest.mark.parametrize("make,needle", [(_floating_mesh, "fall freely"),
                                         (_flat_mesh, "nothing left to simulate")])
def test_mesh_check_and_demo_agree_on_a_mesh_the_solver_cannot_run(trocar, tmp_path, cmd, make,
                                                                   needle):
    path = make(tmp_path / "organ.vtu")
    assert_one_error_line(trocar(*cmd, path), "organ.vtu", needle)


def test_bench_loop_with_an_unknown_scene_is_one_error_line(trocar):
    assert_one_error_line(trocar("bench", "loop", "--scene", "nosuch", "--seconds", "1"),
                          "unknown scene 'nosuch'")


@pytest.mark.parametrize("content,needle", [
    (b'{"format": "trocar-device-profile", "serial": "\xff\xfe"}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_device_check_with_an_unreadable_profile_is_one_error_line(trocar, tmp_path, monkeypatch,
                                                                    content, needle):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    prof = tmp_path / "config" / "trocar" / "devices" / "EMU-BAD.json"
    prof.parent.mkdir(parents=True)
    prof.write_bytes(content)
    link = str(tmp_path / "dev")
    emu = subprocess.Popen([sys.executable, "-m", "haptics.emulator", "--serial", "EMU-BAD",
                            "--link", link, "--exit-with-parent"], stdout=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r, _, _ = select.select([emu.stdout], [], [], 20.0)
        assert r and emu.stdout.readline().strip()
        assert_one_error_line(trocar("device", "check", link), "EMU-BAD.json", needle)
    finally:
        emu.terminate()
        emu.wait(10)
        emu.stdout.close()
