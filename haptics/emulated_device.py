"""EmulatedDevice: the serial driver connected to a device emulator process it starts.

Owns that process's lifetime (start, stop; `stop_process` also serves sim.runtime.devices) for
tests, benchmarks and `trocar device bench`; the link itself is
haptics.serial_device.SerialDevice, unchanged: the same code path as hardware.
"""

from __future__ import annotations

import select
import subprocess
import sys

from haptics.device import DeviceError
from haptics.serial_device import SerialDevice


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """Terminate and reap a child process we started (an emulator), killing it after timeout_s;
    closes its stdout pipe. None or an already finished process is fine."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class EmulatedDevice(SerialDevice):
    """SerialDevice connected to an emulator process it starts (same serial code path).

    emulator_args: extra `trocar device emulate` options, e.g. ("--max-force", "5").
    link: stable symlink path for the pty (needed to reconnect after a replug).
    """

    def __init__(self, *emulator_args: str, link: str | None = None,
                 startup_timeout_s: float = 20.0, **kwargs: object) -> None:
        super().__init__("", **kwargs)
        self.emulator_args = list(emulator_args)
        self.link = link
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.pty_path = ""

    def start_emulator(self) -> str:
        """Spawn the emulator and return its pty path (or the link). DeviceError on failure."""
        args = [sys.executable, "-m", "haptics.emulator", "--exit-with-parent",
                *self.emulator_args]
        if self.link:
            args += ["--link", self.link]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        r, _, _ = select.select([self.proc.stdout], [], [], self.startup_timeout_s)
        line = self.proc.stdout.readline().decode().strip() if r else ""
        if not line:
            self.stop_emulator()
            raise DeviceError(f"emulator did not start within {self.startup_timeout_s:g} s")
        self.pty_path = line
        return self.link or line

    def stop_emulator(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    def open(self) -> None:
        if self.proc is None:
            self.url = self.start_emulator()
        try:
            super().open()
        except DeviceError:
            self.stop_emulator()
            raise

    def close(self) -> None:
        super().close()
        self.stop_emulator()
