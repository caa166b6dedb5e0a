"""`trocar run` / `trocar replay` / `trocar bench loop` from the command line; bad input gives one
`trocar: error:` line and exit status 2 (one case as a real process, the rest in-process through
`sim.cli.main`, which is what the process runs, to keep process start-ups out of the test time)."""

from __future__ import annotations

from runtime_helpers import trocar, trocar_in_process

from sim.cli import main


def _error(capsys, *argv: str) -> str:
    """Run `trocar ARGV` in-process; assert exit 2 and return the single stderr line."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_run_with_a_bad_device_string_prints_one_error_line_and_exits_2():
    r = trocar("run", "--device", "usb:3", "--seconds", "1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error: bad --device 'usb:3'")


def test_run_with_a_missing_replay_device_file_exits_2(capsys):
    line = _error(capsys, "run", "--device", "replay:/nonexistent/x.npz", "--seconds", "1")
    assert line == "trocar: error: --device replay: no such file: /nonexistent/x.npz"


def test_replay_of_a_missing_file_prints_one_error_line_and_exits_2(capsys):
    line = _error(capsys, "replay", "/nonexistent/session.trec")
    assert line == "trocar: error: no such recording: /nonexistent/session.trec"


def test_replay_of_a_file_that_is_not_a_recording_exits_2(tmp_path, capsys):
    f = tmp_path / "x.trec"
    f.write_bytes(b"hello")
    line = _error(capsys, "replay", str(f))
    assert line == f"trocar: error: {f}: not a trocar session recording"


def test_run_with_an_unknown_scene_exits_2(capsys):
    line = _error(capsys, "run", "nowhere", "--seconds", "1")
    assert line.startswith("trocar: error: unknown scene 'nowhere'")


def test_run_with_a_missing_serial_port_exits_2_before_starting_anything(capsys):
    line = _error(capsys, "run", "--device", "serial:/dev/trocar-missing", "--seconds", "1")
    assert line == "trocar: error: --device serial: no such port: /dev/trocar-missing"


def test_bench_loop_prints_json_lines_for_both_cases_and_their_ratio():
    import json

    r = trocar("bench", "loop", "--seconds", "0.5", "--tets", "0", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["case"] for x in rows] == ["empty", "scene", "ratio_scene_over_empty"]
    for row in rows[:2]:
        for key in ("period_p50_us", "period_p99_us", "period_p999_us", "period_max_us",
                    "lateness_p99_us", "overrun_fraction", "rtt_p99_us"):
            assert key in row
        assert row["ticks"] > 100
    assert rows[1]["rtt_p99_us"] > 0 and rows[1]["renderer_snapshots"] >= 0
    assert rows[2]["period_p99_us"] > 0


def test_run_lockstep_prints_the_final_checksum_and_the_recording_replays(tmp_path, capsys):
    rec = str(tmp_path / "ls.trec")
    r = trocar_in_process(capsys, "run", "--lockstep", "--seconds", "0.1", "--tets", "0",
                          "--device", "null", "--record", rec)
    assert r.returncode == 0, r.stderr
    assert "final checksum" in r.stdout and f"recording: {rec}" in r.stdout
    rp = trocar_in_process(capsys, "replay", rec)
    assert rp.returncode == 0 and "100 ticks, 1 checksums equal" in rp.stdout, rp.stdout


def test_run_lockstep_without_seconds_exits_2(capsys):
    line = _error(capsys, "run", "--lockstep", "--device", "null")
    assert line == "trocar: error: --lockstep needs --seconds"
