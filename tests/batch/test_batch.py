"""`trocar batch` end to end as a user runs it (subprocesses, real worker processes, a real local Ray
head), on short episodes (--max-seconds) so the suite stays fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _trocar(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _rows(out: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (out / "episodes").glob("ep-?????.json")),
                  key=lambda r: r["episode"])


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    from sim.cli import main

    for args in (["batch", "peg_transfer", "--episodes", "0", "--out", str(tmp_path / "a")],
                 ["batch", "no_such", "--out", str(tmp_path / "b")],
                 ["batch", "peg_transfer", "--policy", "nosuchmodule:f", "--out", str(tmp_path / "c")],
                 ["batch", "peg_transfer", "--address", "1.2.3.4:6379", "--out", str(tmp_path / "d")]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("trocar: error: ") and len(err.splitlines()) == 1, err
        assert not (tmp_path / args[-1]).exists()


def test_an_interrupted_batch_resumes_without_redoing_finished_episodes(tmp_path):
    out = tmp_path / "batch"
    args = ["batch", "peg_transfer", "--policy", "expert", "--episodes", "2", "--max-seconds", "0.3",
            "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = out / "episodes" / "ep-00000.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err
    before = {r["episode"]: (out / "episodes" / f"ep-{r['episode']:05d}.json").stat().st_mtime_ns
              for r in _rows(out)}
    assert list(before) == [0]
    r = _trocar(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming: 1 episodes done, 1 to run" in r.stderr
    for ep, mtime in before.items():  # finished episodes were not run again
        assert (out / "episodes" / f"ep-{ep:05d}.json").stat().st_mtime_ns == mtime
    table = pq.read_table(out / "results.parquet").to_pydict()
    assert table["episode"] == [0, 1] and table["seed"] == [0, 1]
    assert all(d == pytest.approx(0.3, abs=2e-3) for d in table["m_completion_time"])
    assert (out / "plots.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["columns"]["score"]["n"] == 2


def test_a_crashed_and_a_hung_worker_are_reported_and_their_episodes_retried(tmp_path):
    out = tmp_path / "batch"
    marks = tmp_path / "marks"
    marks.mkdir()
    r = _trocar("batch", "peg_transfer", "--policy", "flaky_policy:crash_and_hang", "--episodes", "3",
                "--max-seconds", "0.2", "--workers", "2", "--episode-timeout", "30", "--out", str(out),
                env=_env(TROCAR_TEST_MARKS=str(marks)))
    assert r.returncode == 0, r.stderr
    assert "episode 1: worker crashed" in r.stderr and "episode 2: worker hung" in r.stderr
    rows = _rows(out)
    assert [row["episode"] for row in rows] == [0, 1, 2]
    assert [row["attempt"] for row in rows[1:]] == [2, 2]  # (a starved box may time out episode 0 too)
    assert pq.read_table(out / "results.parquet").num_rows == 3


def test_a_ray_batch_runs_on_a_local_ray_and_its_episodes_replay_exactly(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "batch"
    r = _trocar("batch", "peg_transfer", "--policy", "expert", "--episodes", "2", "--seed", "4",
                "--max-seconds", "0.3", "--workers", "2", "--backend", "ray", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "ray at " in r.stderr
    rows = _rows(out)
    assert [row["seed"] for row in rows] == [4, 5]
    assert all(row["worker"].split(":")[1] != str(os.getpid()) for row in rows)
    rec = out / rows[1]["recording"]
    from sim.cli import main

    assert main(["replay", str(rec)]) == 0  # a user's replay: checksums and events
    assert "4 checksums equal" in capsys.readouterr().out

    from benchmarks.batch_episode import replay_episode, same_result
    from procedures.base import ProcedureResult

    replayed, result, final_checksum = replay_episode(str(rec))
    assert replayed.ok and replayed.checked == 4  # ticks 99, 199, 299 and the last one (300)
    assert replayed.last_tick == rows[1]["ticks"] - 1
    stored = ProcedureResult.from_json((out / (rows[1]["recording"] + ".result.json")).read_text())
    assert same_result(stored, result)
    assert final_checksum == rows[1]["checksum"]
