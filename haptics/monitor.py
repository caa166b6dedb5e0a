"""`trocar device list` and `trocar device monitor`: what a lab tech opens first.

Owns the human-facing views of a link: which ports answer the trocar handshake (with their INFO),
and a live view of STATE rate, arrival jitter, round trip, position, buttons, status and error
counters. The monitor never commands force: it sends zero FORCE frames as the heartbeat.
Uses `rich` for the live view (a table redrawn in place at 10 Hz); `--plain` prints a line a second.
"""

from __future__ import annotations

import json
import time

import numpy as np

from haptics import protocol as P
from haptics.device import DeviceError
from haptics.serial_device import SerialDevice, probe

_STATUS_NAMES = [(P.STATUS_ENABLED, "enabled"), (P.STATUS_HOMED, "homed"),
                 (P.STATUS_FAULT, "FAULT"), (P.STATUS_WATCHDOG, "WATCHDOG"),
                 (P.STATUS_CLAMPED, "clamped"), (P.STATUS_CALIBRATED, "calibrated")]


def status_text(status: int) -> str:
    """STATE status bits as words."""
    return " ".join(name for bit, name in _STATUS_NAMES if status & bit) or "-"


def list_devices(extra_ports: list[str], *, timeout_s: float = 0.5, as_json: bool = False) -> int:
    """Print every serial port (plus `extra_ports`) and the INFO of those that answer."""
    from serial.tools import list_ports

    ports = [(p.device, p.description or "") for p in list_ports.comports()]
    ports += [(p, "given with --port") for p in extra_ports]
    if not ports:
        print("no serial ports found (give an emulator pty with --port PATH)")
        return 0
    for dev, desc in ports:
        try:
            info = probe(dev, timeout_s)
        except DeviceError as exc:
            row = {"port": dev, "description": desc, "trocar": False, "error": str(exc)}
            line = f"{dev}  {desc}  -- {exc}"
        else:
            row = {"port": dev, "description": desc, "trocar": True,
                   "serial": info.serial, "protocol": ".".join(map(str, info.protocol)),
                   "firmware": ".".join(map(str, info.firmware)),
                   "max_force_n": round(info.max_force_n, 3),
                   "max_stiffness_n_per_m": round(info.max_stiffness, 1),
                   "workspace_m": [round(w, 4) for w in info.workspace_m],
                   "rate_hz": info.rate_hz}
            line = (f"{dev}  {desc}  trocar device {info.serial}, protocol {row['protocol']}, "
                    f"firmware {row['firmware']}, max force {info.max_force_n:g} N, "
                    f"max stiffness {info.max_stiffness:g} N/m, rate {info.rate_hz} Hz")
        print(json.dumps(row) if as_json else line)
    return 0


class LinkStats:
    """Rolling one-second window of STATE arrivals: rate [Hz], jitter [us], round trip [us]."""

    def __init__(self) -> None:
        self.arrivals = np.zeros(4096)
        self.n = 0

    def add(self, t: float) -> None:
        self.arrivals[self.n & 4095] = t
        self.n += 1

    def window(self, now: float) -> tuple[float, float]:
        """(rate [Hz], p99 |inter-arrival - 1/rate| [us]) over the last second."""
        k = min(self.n, 4096)
        a = np.sort(self.arrivals[:k])
        a = a[a > now - 1.0]
        if len(a) < 3:
            return 0.0, float("nan")
        d = np.diff(a)
        rate = (len(a) - 1) / (a[-1] - a[0])
        return rate, float(np.percentile(np.abs(d - 1.0 / rate), 99) * 1e6)


def _snapshot(dev: SerialDevice, s, ls: LinkStats, now: float) -> dict:
    rate, jitter = ls.window(now)
    st = dev.stats()
    return {"port": dev.url, "phase": dev.phase, "rate_hz": rate, "jitter_p99_us": jitter,
            "rtt_p50_us": st["rtt_p50_us"], "rtt_p99_us": st["rtt_p99_us"],
            "position_mm": (s.position * 1e3).tolist(), "gripper_rad": s.gripper,
            "buttons": s.buttons, "status": status_text(s.status),
            "frames_lost": st["frames_lost"], "crc_errors": st["crc_errors"],
            "framing_errors": st["framing_errors"], "disconnects": st["disconnects"],
            "error": dev.last_error}


def _table(d: dict):
    from rich.table import Table

    t = Table(title=f"trocar device monitor - {d['port']} ({d['phase']})", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("STATE rate", f"{d['rate_hz']:.1f} Hz")
    t.add_row("arrival jitter p99", f"{d['jitter_p99_us']:.0f} us")
    t.add_row("round trip p50 / p99", f"{d['rtt_p50_us']:.0f} / {d['rtt_p99_us']:.0f} us")
    t.add_row("position", "  ".join(f"{x:+8.2f}" for x in d["position_mm"]) + " mm")
    t.add_row("gripper", f"{d['gripper_rad']:.3f} rad")
    t.add_row("buttons", f"{d['buttons']:02b}")
    t.add_row("status", d["status"])
    t.add_row("frames lost / CRC / framing",
              f"{d['frames_lost']} / {d['crc_errors']} / {d['framing_errors']}")
    t.add_row("disconnects", str(d["disconnects"]))
    t.add_row("last error", d["error"] or "-")
    return t


def monitor(port: str, *, seconds: float | None = None, plain: bool = False) -> int:
    """Run the live view until Ctrl-C or `seconds` [s]. DeviceError if the port is unusable."""
    dev = SerialDevice(port, state_timeout_s=0.1)
    dev.open()
    ls = LinkStats()
    t0 = time.perf_counter()
    live = None
    try:
        if not plain:
            from rich.live import Live

            live = Live(refresh_per_second=10, transient=False)
            live.start()
        next_draw = t0
        while seconds is None or time.perf_counter() - t0 < seconds:
            s = dev.read()
            if s.fresh:
                ls.add(s.t)
            dev.write_force((0.0, 0.0, 0.0))
            now = time.perf_counter()
            if now >= next_draw:
                d = _snapshot(dev, s, ls, now)
                if live is not None:
                    live.update(_table(d))
                    next_draw = now + 0.1
                else:
                    if now > t0 + 0.5:
                        print(f"{d['phase']}: {d['rate_hz']:.0f} Hz, jitter p99 "
                              f"{d['jitter_p99_us']:.0f} us, rtt p99 {d['rtt_p99_us']:.0f} us, "
                              f"pos [{', '.join(f'{x:+.2f}' for x in d['position_mm'])}] mm, "
                              f"buttons {d['buttons']:02b}, {d['status']}, lost "
                              f"{d['frames_lost']}, crc {d['crc_errors']}", flush=True)
                    next_draw = now + 1.0
            dev.wait(0.001)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        dev.close()
    return 0
