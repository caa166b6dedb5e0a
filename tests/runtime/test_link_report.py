"""What `trocar run` says about its device link (issue 11, items 3 and 4): a device lost for good
is reported and the exit status says so; link health and calibration state are in the timing
report and the recording's END chunk; a device that cannot be opened is one error line, exit 2,
in every rate mode.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest
from runtime_helpers import TROCAR

from sim.runtime.devices import EMU_DEFAULT_ARGS
from sim.runtime.recording import read_recording


def test_a_device_unplugged_for_good_is_reported_with_link_health_and_exit_1(tmp_path):
    link, log = str(tmp_path / "dev"), str(tmp_path / "emu.log")
    emu = subprocess.Popen([sys.executable, "-m", "haptics.emulator", *EMU_DEFAULT_ARGS, "--link", link,
                            "--event-log", log, "--unplug-at", "1.0", "--exit-with-parent"],
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r, _, _ = select.select([emu.stdout], [], [], 20.0)
        assert r and emu.stdout.readline().strip()
        rec = str(tmp_path / "s.trec")
        env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}  # no calibration profile there
        res = subprocess.run([*TROCAR, "run", "--device", f"serial:{link}", "--rate-mode", "realtime",
                              "--tets", "0", "--display", "headless", "--record", rec,
                              "--seconds", "3"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, **env})
    finally:
        emu.terminate()
        emu.wait(10)
        emu.stdout.close()
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "device LOST and not back at the end of the session" in out, out
    assert "device link:" in out and "1 disconnects, 0 reconnects" in out, out
    assert "UNCALIBRATED" in out and "force limited to 1 N" in out, out
    end = read_recording(rec).end
    link_stats = end["timing"]["link"][0]
    assert link_stats["disconnects"] == 1 and link_stats["connected"] is False
    assert link_stats["ever_connected"] is True and link_stats["time_without_device_s"] > 0.5
    assert link_stats["calibrated"] is False


@pytest.mark.parametrize("mode", ["realtime", "multirate"])
def test_a_device_that_cannot_be_opened_is_one_error_line_and_exit_2_in_every_rate_mode(tmp_path,
                                                                                      mode):
    res = subprocess.run([*TROCAR, "run", "--device", "serial:/dev/null", "--rate-mode", mode,
                          "--tets", "0", "--display", "headless", "--record",
                          str(tmp_path / "s.trec"), "--seconds", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("trocar: error:")]
    assert len(errors) == 1 and "/dev/null" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
