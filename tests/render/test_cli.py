"""`trocar render` and `trocar bench render` through the real CLI."""

import json

import numpy as np
from PIL import Image
from render_helpers import run_cli, tissue_mask


def test_render_writes_a_png_of_the_scene(egl, tmp_path):
    out = tmp_path / "frame.png"
    proc = run_cli("render", "--out", str(out), "--width", "200", "--height", "150", "--tets", "1000",
                   "--at", "0.2")
    assert proc.returncode == 0, proc.stderr
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (150, 200, 3)
    assert tissue_mask(img).mean() > 0.05


def test_render_frames_differ_as_the_tools_move(egl, tmp_path):
    proc = run_cli("render", "--frames", "3", "--out-dir", str(tmp_path / "frames"), "--width", "160",
                   "--height", "120", "--tets", "1000", "--at", "0.2", "--fps", "10", "--no-hud")
    assert proc.returncode == 0, proc.stderr
    files = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert [f.name for f in files] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    imgs = [np.asarray(Image.open(f).convert("RGB")).astype(int) for f in files]
    assert np.abs(imgs[0] - imgs[1]).max() > 30 and np.abs(imgs[1] - imgs[2]).max() > 30


def _one_error_line(proc, fragment):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("trocar: error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_scene_is_one_error_line(tmp_path):
    _one_error_line(run_cli("render", "no_such_scene", "--out", str(tmp_path / "x.png")), "unknown scene")


def test_unwritable_output_is_one_error_line(tmp_path):
    _one_error_line(run_cli("render", "--out", str(tmp_path / "missing" / "x.png")), "does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_error_line(run_cli("render", "--frames", "2", "--out-dir", str(blocker / "sub")),
                    "cannot create output directory")


def test_frames_without_an_output_directory_is_one_error_line():
    _one_error_line(run_cli("render", "--frames", "3"), "--out-dir")


def test_bench_render_prints_frame_time_json(egl):
    proc = run_cli("bench", "render", "--json", "--seconds", "1", "--width", "160", "--height", "120",
                   "--snapshots", "2", "--tets", "1000")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "render" and result["frames"] >= 5
    assert 0 < result["frame_ms_median"] <= result["frame_ms_p99"]
    assert "llvmpipe" in result["renderer"] or result["renderer"]


def test_render_replay_shows_a_recorded_session_at_a_given_time(egl, tmp_path):
    # A recorded peg transfer (scripted expert, 1.5 s): frames at 0.1 s and 1.4 s of the recording
    # show the tools where the session had them (they moved); past the end is one error line.
    rec = tmp_path / "peg.trec"
    proc = run_cli("run", "peg_transfer", "--policy", "expert", "--lockstep", "--seconds", "1.5",
                   "--record", str(rec))
    # (exit 1: the attempt is incomplete after 1.5 s, and says so; the recording is whole)
    assert proc.returncode == 1 and "incomplete" in proc.stdout, proc.stdout + proc.stderr
    imgs = []
    for at in ("0.1", "1.4"):
        out = tmp_path / f"at{at}.png"
        proc = run_cli("render", "--replay", str(rec), "--at", at, "--out", str(out), "--width", "200",
                       "--height", "150", "--no-hud")
        assert proc.returncode == 0, proc.stderr
        imgs.append(np.asarray(Image.open(out).convert("RGB")).astype(int))
    assert imgs[0].shape == (150, 200, 3)
    assert (np.abs(imgs[0] - imgs[1]).max(axis=2) > 30).mean() > 0.01
    _one_error_line(run_cli("render", "--replay", str(rec), "--at", "5", "--out", str(tmp_path / "x.png")),
                    "ends at")
