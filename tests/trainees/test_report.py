"""Reports: the HTML pages in a real headless browser (Debian's chromium), the CSV export."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trainees_helpers import result, run_cli

from trainees import records

PROBE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: scripts/setup-render-deps.sh installs it (make test)")
    pytest.skip("chromium not installed (scripts/setup-render-deps.sh installs it)")


def browse(page: Path, *extra: str) -> tuple[str, list[str]]:
    """Load a page in headless chromium; returns (the DOM after load, console messages)."""
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([_chromium(), *PROBE_FLAGS, f"--user-data-dir={profile}",
                            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *extra,
                            "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return r.stdout, console


def _images(dom: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b64)))
            for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)]


def _assert_plots_render(dom: str, console: list[str], at_least: int) -> None:
    assert console == []
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    decoded = int(re.search(r'data-images-decoded="(\d+)"', dom).group(1))
    assert total >= at_least and decoded == total  # the browser decoded every plot
    for img in _images(dom):
        assert img.width > 300 and img.height > 250
        assert np.asarray(img.convert("L")).std() > 10  # a picture, not a blank


def test_the_console_check_catches_a_page_with_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('broken');nope();</script>"
                   "</body></html>")
    _, console = browse(bad)
    assert any("broken" in c for c in console) and any("nope is not defined" in c for c in console)


def test_trainee_report_loads_in_chromium_with_its_plots_and_no_console_errors(sim_db, tmp_path):
    out = tmp_path / "report.html"
    r = run_cli("report", "--trainee", "sim-next-0", "--out", str(out), "--db", str(sim_db))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing to fetch
    dom, console = browse(out)
    # 3 tasks' learning curves + the radar
    _assert_plots_render(dom, console, at_least=4)
    conn = records.connect(sim_db)
    n = len(records.query_attempts(conn, trainee="sim-next-0"))
    attempts_table = dom.split("<h2>Attempts</h2>")[1]
    assert attempts_table.count("<tr>") == n + 1
    for text in ("Learning curves", "Latest attempt against the benchmark", "Plateaus", "proficient"):
        assert text in dom


def _stuck_db(sim_db: Path, tmp_path: Path) -> Path:
    """The simulated cohort plus one named trainee whose peg transfer time has flattened at 60 s."""
    db = tmp_path / "cohort.sqlite3"
    src = sqlite3.connect(sim_db)
    src.backup(sqlite3.connect(db))
    records.add_trainee(db, "STUCK-1", name="Pat Stuck", cohort="sim-next")
    t0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
    for i, t in enumerate([120, 95, 80, 70, 64, 61, 60, 60.5, 59.8, 60.2, 60.1, 59.9]):
        aid = records.begin_attempt(db, "STUCK-1", "peg_transfer", "1", started=t0 + timedelta(days=i))
        records.finish_attempt(db, aid, result(float(t)), ended=t0 + timedelta(days=i, minutes=2))
    return db


def test_cohort_report_shows_status_per_task_attempts_per_week_and_who_is_stuck(sim_db, tmp_path):
    db = _stuck_db(sim_db, tmp_path)
    out = tmp_path / "cohort.html"
    r = run_cli("report", "--cohort", "sim-next", "--out", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    dom, console = browse(out)
    _assert_plots_render(dom, console, at_least=1)
    stuck = dom.split("<h2>Who is stuck</h2>")[1]
    assert "STUCK-1" in stuck and "completion_time flat for" in stuck and "sim-next-0" not in stuck
    status = dom.split("<h2>Status per task</h2>")[1].split("<h2>")[0]
    assert status.count('class="proficient"') >= 3 * 2  # both simulated learners, every task
    assert "Pat Stuck" in status
    anon = tmp_path / "anon.html"
    assert run_cli("report", "--cohort", "sim-next", "--out", str(anon), "--drop-names",
                   "--db", str(db)).returncode == 0
    assert "Pat Stuck" not in anon.read_text() and "STUCK-1" in anon.read_text()
    trainee = tmp_path / "stuck.html"
    assert run_cli("report", "--trainee", "STUCK-1", "--out", str(trainee), "--db", str(db)).returncode == 0
    assert "peg_transfer: completion_time has plateaued since attempt" in trainee.read_text()


def test_csv_export_has_one_row_per_attempt_and_a_column_per_metric(sim_db, tmp_path):
    db = _stuck_db(sim_db, tmp_path)
    out = tmp_path / "a.csv"
    assert run_cli("report", "--cohort", "sim-next", "--csv", str(out), "--db", str(db)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    conn = records.connect(db)
    assert len(rows) == len(records.query_attempts(conn, cohort="sim-next"))
    stuck = [r for r in rows if r["trainee"] == "STUCK-1"]
    assert [float(r["completion_time"]) for r in stuck][:3] == [120.0, 95.0, 80.0]
    assert stuck[0]["name"] == "Pat Stuck" and "cut_deviation" in rows[0]
    assert run_cli("report", "--cohort", "sim-next", "--csv", str(out), "--drop-names",
                   "--db", str(db)).returncode == 0
    assert "Pat Stuck" not in out.read_text() and "name" not in next(csv.reader(out.open()))
