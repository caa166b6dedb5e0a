"""`trocar device calibrate PORT` and `trocar device check PORT`: the calibration wizard.

Owns driving a device through the calibration steps, recording every STATE frame while it does
(the driver itself keeps only the newest), turning the recordings into the fits of
haptics/calibration.py, and writing/verifying the profile of haptics/profile.py.

Steps (`--steps`, default all):
  position  handshake, homing, workspace sweep (button 2 held while visiting +stop, -stop, home
            on x, then y, then z) and the reference jig (button 1 pressed in each JIG_POINTS hole,
            in order) -> per-axis encoder offset, gain, sign, residuals in mm.
  force     the handle on a reference spring (`--reference-stiffness`, N/m) at rest: static pushes
            of known commanded force along +-x, +-y, +-z -> per-axis force gain; the same pushes'
            steps give the sensing+actuation dead time (device ticks from the FORCE echo to the
            first encoder count of motion) and the host round trip.

The wizard is paced by the device's buttons, not by the clock, so a person and the emulator's
scripted hand (`--hand script:FILE`, FILE from `--write-jig-script`) go through the same code.
Exit status: 0 pass, 1 a step failed or a profile no longer holds, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from haptics import calibration as C
from haptics import protocol as P
from haptics.device import DeviceError
from haptics.profile import (
    ProfileError,
    load_for_device,
    load_profile,
    make_profile,
    profile_path,
    save_profile,
)
from haptics.serial_device import SerialDevice

STEPS = ("position", "force")
POSITION_TOL_MM = 0.5  # `check`: jig points must read within this [mm]
FORCE_TOL = 0.02  # `check`: force gain within this (relative)
LATENCY_TOL_MS = 0.5  # `check`: one-way latency within this [ms]
MAX_JIG_RESIDUAL_MM = 1.0  # a jig fit worse than this fails the step (tip out of a hole) [mm]


class CalibrationFailed(Exception):
    """A step could not measure what it needs (one line)."""


class RecordingDevice(SerialDevice):
    """SerialDevice that also keeps every STATE frame while `recording` is set.

    rows: (seq, t_us, x, y, z counts, buttons, force_echo) per frame, in arrival order.
    """

    def __init__(self, url: str, **kw) -> None:
        super().__init__(url, **kw)
        self.recording = False
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []

    def _handle(self, msg_type: int, payload: bytes, now: float) -> None:
        if self.recording and msg_type == P.MSG_STATE and len(payload) == P.STATE_STRUCT.size:
            v = P.STATE_STRUCT.unpack(payload)
            self.rows.append((v[0], v[1], v[2], v[3], v[4], v[6], v[11]))
        super()._handle(msg_type, payload, now)

    def take(self) -> np.ndarray:
        """The recorded rows as an int64 array (N, 7), sorted by seq, duplicates dropped."""
        a = np.array(self.rows, dtype=np.int64).reshape(-1, 7)
        self.rows = []
        if len(a):
            _, idx = np.unique(a[:, 0], return_index=True)
            a = a[np.sort(idx)]
        return a


def _pump(dev: SerialDevice, seconds: float, force=(0.0, 0.0, 0.0), until=None) -> None:
    """Host loop for `seconds` [s]: read, send this tick's FORCE, wait for the port."""
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        dev.read()
        dev.write_force(force)
        if until is not None and until():
            return
        dev.wait(0.001)


def _edges(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of the runs where mask is True (end exclusive)."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


# ------------------------------------------------------------------------------------- steps

def record_jig_cycle(dev: RecordingDevice, timeout_s: float, say, *, live: bool = False) -> np.ndarray:
    """Record from the start of a sweep (button 2 pressed) to the last jig press released.

    live: print a readout line (raw counts, buttons, progress) twice a second.
    """
    n_jig = len(C.JIG_POINTS)
    say("  press and hold button 2, move the handle to the +x stop, the -x stop, home; the same "
        "for y and z; release button 2")
    say(f"  then put the tip in jig holes 1..{n_jig} in order, pressing button 1 in each")
    dev.rows = []
    dev.recording = True
    t_end = time.monotonic() + timeout_s
    prev_b = None
    started = False
    start_i = 0
    presses = 0
    scanned = 0
    try:
        while time.monotonic() < t_end:
            _pump(dev, 0.05)
            rows = dev.rows
            for i in range(scanned, len(rows)):
                b = rows[i][5]
                if prev_b is not None:
                    if b & C.BUTTON_SWEEP and not prev_b & C.BUTTON_SWEEP:
                        # A (new) sweep: start over; a press lost with dropped frames costs a cycle
                        # instead of shifting every later press to the wrong jig hole.
                        started, start_i, presses = True, i, 0
                    elif started and prev_b & C.BUTTON_JIG and not b & C.BUTTON_JIG:
                        presses += 1
                prev_b = b
            scanned = len(rows)
            if live and rows and len(rows) % 500 < 60:
                r = rows[-1]
                print(f"\r  counts {r[2]:+9d} {r[3]:+9d} {r[4]:+9d}  buttons {r[5]}  "
                      f"{'sweeping/jig' if started else 'waiting for button 2'}  "
                      f"jig points {presses}/{n_jig}   ", end="", flush=True)
            if started and presses >= n_jig:
                dev.recording = False
                a = np.array(rows[start_i:], dtype=np.int64)
                return a
    finally:
        dev.recording = False
        dev.rows = []
    if not started:
        raise CalibrationFailed(f"no sweep started within {timeout_s:g} s (button 2 never pressed)")
    raise CalibrationFailed(f"only {presses} of {n_jig} jig points recorded within {timeout_s:g} s")


def fit_position(rec: np.ndarray, info: P.Info) -> tuple[dict, dict]:
    """Sweep and jig fits from one recorded cycle. Returns (position, workspace) sections."""
    cpm = np.asarray(info.counts_per_m, dtype=float)
    counts = rec[:, 2:5].astype(float)
    buttons = rec[:, 5]
    sweep_runs = _edges((buttons & C.BUTTON_SWEEP) != 0)
    if not sweep_runs:
        raise CalibrationFailed("no sweep in the recording")
    s0, s1 = sweep_runs[0]
    sw = counts[s0:s1]
    first = np.zeros(3)
    thirds = np.array_split(np.arange(len(sw)), 3)  # x, then y, then z: one third of the sweep each
    for a in range(3):
        seg = sw[thirds[a], a]
        half = 0.5 * (seg.max() - seg.min())
        j = int(np.argmax(np.abs(seg - seg[0]) > 0.5 * half))
        first[a] = seg[j]
    sweep = C.fit_sweep(sw, first, np.asarray(info.workspace_m), cpm)
    s_next = sweep_runs[1][0] if len(sweep_runs) > 1 else len(rec)
    runs = [r for r in _edges((buttons & C.BUTTON_JIG) != 0) if s1 <= r[0] and r[1] <= s_next]
    if len(runs) != len(C.JIG_POINTS):
        raise CalibrationFailed(f"{len(runs)} jig presses recorded, need {len(C.JIG_POINTS)}")
    per_point = np.array([np.median(counts[a:b], axis=0) for a, b in runs])
    try:
        fit = C.fit_encoder(per_point, C.JIG_POINTS, cpm)
    except ValueError as exc:
        raise CalibrationFailed(str(exc)) from None
    worst = float(np.max(fit.max_residual_mm))
    if worst > MAX_JIG_RESIDUAL_MM:
        hole = int(np.argmax(np.max(np.abs(per_point - (fit.slope * C.JIG_POINTS + fit.offset_counts))
                                    / np.abs(fit.slope), axis=1))) + 1
        raise CalibrationFailed(f"jig residual {worst:.2f} mm > {MAX_JIG_RESIDUAL_MM} mm (worst at "
                                f"hole {hole}: was the tip in the hole?)")
    position = {"slope_counts_per_m": fit.slope, "offset_counts": fit.offset_counts,
                "sign": fit.sign, "gain_error": fit.gain_error, "offset_mm": fit.offset_mm,
                "residual_mm": fit.residual_mm, "max_residual_mm": fit.max_residual_mm,
                "points": fit.points,
                "jig_error_mm": (per_point - (fit.slope * C.JIG_POINTS + fit.offset_counts))
                / np.abs(fit.slope) * 1e3}
    workspace = {"min_counts": sweep.min_counts, "max_counts": sweep.max_counts,
                 "offset_counts": sweep.offset_counts, "gain_error": sweep.gain_error,
                 "sign": sweep.sign}
    return position, workspace


def measure_force(dev: RecordingDevice, info: P.Info, position: dict, stiffness: float,
                  say) -> tuple[dict, dict]:
    """Static pushes on the reference spring -> (force, latency) sections."""
    say(f"  attach the handle to the reference spring ({stiffness:g} N/m) and let go")
    slope = np.asarray(position["slope_counts_per_m"], dtype=float)
    off = np.asarray(position["offset_counts"], dtype=float)
    f_push = min(3.0, 0.6 * dev.spec.max_force)
    settle = 0.4
    dev.rows = []
    dev.recording = True
    pushes = []  # (force vector, step FORCE seq on, step FORCE seq off)
    try:
        _pump(dev, settle + dev.safety.ramp_s)  # soft start ramps in at zero force; handle at rest
        for a in range(3):
            for sgn in (1.0, -1.0):
                f = np.zeros(3)
                f[a] = sgn * f_push
                dev.read()
                dev.write_force(f)
                k_on = dev._force_seq
                _pump(dev, settle, f)
                dev.read()
                dev.write_force((0.0, 0.0, 0.0))
                k_off = dev._force_seq
                _pump(dev, settle)
                pushes.append((f, k_on, k_off))
        rtt = dev.rtt_percentiles((50, 99))
    finally:
        dev.recording = False
    rec = dev.take()
    if len(rec) < 100:
        raise CalibrationFailed("too few STATE frames recorded during the pushes")
    seq, echo, counts = rec[:, 0], rec[:, 6], rec[:, 2:5].astype(float)
    t_us = rec[:, 1].astype(float)

    # The device echoes the previous host's FORCE numbers until ours arrive: search from the last
    # backwards jump of the echo.
    drops = np.flatnonzero(np.diff(echo) < 0)
    start = int(drops[-1]) + 1 if len(drops) else 0

    def first_echo(k: int) -> int:
        hit = np.flatnonzero(echo[start:] >= k)
        return start + int(hit[0]) if len(hit) else len(echo)

    def rest_counts(end_i: int) -> np.ndarray:
        return np.median(counts[max(end_i - 50, 0):end_i], axis=0)

    commanded, disp, delays = [], [], []
    for f, k_on, k_off in pushes:
        i_on, i_off = first_echo(k_on), first_echo(k_off)
        before = C.counts_to_position(rest_counts(i_on), slope, off)
        during = C.counts_to_position(rest_counts(i_off), slope, off)
        commanded.append(f)
        disp.append(during - before)
        a = int(np.flatnonzero(f)[0])
        for i in (i_on, i_off):
            d = C.motion_onset(seq, counts[:, a], i)
            if d is not None:
                delays.append(d)
    gain, resid = C.fit_force_gain(np.array(commanded), np.array(disp), stiffness)
    if not np.all(np.isfinite(gain)) or np.any(np.abs(gain) < 0.05):
        raise CalibrationFailed("the handle did not move under the test force on every axis "
                                "(is it on the reference spring?)")
    if not delays:
        raise CalibrationFailed("no usable force step for the latency (frames lost?)")
    rate = info.rate_hz or 1000
    dead_ticks = float(np.median(delays))
    span_s = (t_us[-1] - t_us[0]) * 1e-6
    latency = {"dead_time_ms": dead_ticks * 1000.0 / rate,
               "one_way_ms": 0.5 * dead_ticks * 1000.0 / rate, "trials": len(delays),
               "trial_dead_ticks": delays,
               "state_rate_hz": (seq[-1] - seq[0]) / span_s if span_s > 0 else 0.0,
               "rtt_p50_us": rtt[0], "rtt_p99_us": rtt[1]}
    force = {"gain": gain, "residual_n": resid, "reference_stiffness_n_per_m": stiffness,
             "push_n": f_push}
    return force, latency


# ---------------------------------------------------------------------------------- commands

def _open(port: str) -> RecordingDevice:
    # Steps are the measurement: no dF/dt smoothing (it would blur the step onset), a short soft
    # start, and a forgiving host watchdog for a loaded machine. The clamp stays.
    dev = RecordingDevice(port, max_rate=1e6, ramp_s=0.1, state_timeout_s=0.2,
                          handshake_timeout_s=3.0, auto_reconnect=False)
    dev.open()
    return dev


def _homed(dev: SerialDevice) -> bool:
    """Wait for a STATE; if the device is not homed, send HOME (the emulator and most devices
    home in place; a device that needs the handle at its reference pose documents that)."""
    _pump(dev, 1.0, until=lambda: dev.states > 0)
    if not dev.status & P.STATUS_HOMED:
        dev.command(P.CMD_HOME)
        _pump(dev, 0.5, until=lambda: bool(dev.status & P.STATUS_HOMED))
    return bool(dev.status & P.STATUS_HOMED)


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:+.4g}" for x in np.asarray(v, dtype=float)) + ")"


def _run_steps(dev: RecordingDevice, steps: list[str], stored: dict | None, args,
               say) -> dict:
    info = dev.info
    out: dict = {}
    guided = not args.auto
    for step in steps:
        while True:
            say(f"step {step}:")
            try:
                if step == "position":
                    rec = record_jig_cycle(dev, args.timeout, say, live=guided)
                    if guided:
                        print()
                    out["position"], out["workspace"] = fit_position(rec, info)
                    p = out["position"]
                    say(f"  sign {_fmt(p['sign'])}, gain error {_fmt(p['gain_error'])}, offset "
                        f"{_fmt(p['offset_mm'])} mm, residual {_fmt(p['residual_mm'])} mm: pass")
                elif step == "force":
                    pos = out.get("position") or (stored or {}).get("position")
                    if pos is None:
                        raise CalibrationFailed("the force step needs the position calibration "
                                                "(run --steps position first)")
                    out["force"], out["latency"] = measure_force(
                        dev, info, pos, args.reference_stiffness, say)
                    f, lat = out["force"], out["latency"]
                    say(f"  force gain {_fmt(f['gain'])} (residual {_fmt(f['residual_n'])} N); "
                        f"latency {lat['one_way_ms']:.2f} ms one way ({lat['trials']} steps), "
                        f"round trip p50 {lat['rtt_p50_us']:.0f} us p99 {lat['rtt_p99_us']:.0f} "
                        f"us, STATE {lat['state_rate_hz']:.0f} Hz: pass")
            except CalibrationFailed as exc:
                dev.zero()
                say(f"  FAIL: {exc}")
                if guided and input("  r = redo, anything else = stop: ").strip().lower() == "r":
                    continue
                raise
            if guided and input("  Enter = accept, r = redo: ").strip().lower() == "r":
                continue
            break
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    from haptics.cli import _fail

    if args.write_jig_script:
        C.write_jig_script(args.write_jig_script, np.array(args.workspace))
        print(f"jig script written to {args.write_jig_script}")
        return 0
    if not args.port:
        return _fail("calibrate needs PORT (or --write-jig-script FILE)")
    steps = _steps(args.steps)
    if isinstance(steps, str):
        return _fail(steps)
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return _fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    say = print
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return _fail(str(exc))
    try:
        info = dev.info
        say(f"step handshake: {info.serial}, protocol {info.protocol[0]}.{info.protocol[1]}, "
            f"firmware {'.'.join(map(str, info.firmware))}: pass")
        homed = _homed(dev)
        say(f"step homing: {'homed' if homed else 'NOT homed'}: {'pass' if homed else 'FAIL'}")
        if not homed:
            return 1
        stored = None
        try:  # steps not run this time keep their values from a valid stored profile
            stored = (load_for_device(info) if args.profile is None
                      else load_profile(args.profile, info=info))
        except ProfileError:
            pass
        try:
            new = _run_steps(dev, steps, stored, args, say)
        except CalibrationFailed:
            return 1
        body = {k: v for k, v in (stored or {}).items()
                if k in ("position", "workspace", "force", "latency")}
        body.update(new)
        path = save_profile(make_profile(info, body), args.profile)
        dev.command(P.CMD_SAVE_CALIBRATION)
        _pump(dev, 0.05)
        say(f"profile written: {path}")
        if args.report:
            try:
                write_report(args.report, load_profile(path, info=info))
            except OSError as exc:
                return _fail(f"cannot write report {args.report}: {exc.strerror}")
            say(f"report written: {args.report}")
        return 0
    except (KeyboardInterrupt, EOFError):
        return _fail("calibration interrupted; force zeroed, profile not written")
    finally:
        dev.close()


def cmd_check(args: argparse.Namespace) -> int:
    from haptics.cli import _fail

    t0 = time.monotonic()
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return _fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return _fail(str(exc))
    try:
        try:
            stored = (load_for_device(dev.info) if args.profile is None
                      else load_profile(args.profile, info=dev.info))
        except ProfileError as exc:
            dev.close()
            return _fail(str(exc))
        steps = _steps(args.steps) if args.steps else [s for s in STEPS if s in stored]
        if isinstance(steps, str):
            return _fail(steps)
        args.auto = True
        try:
            new = _run_steps(dev, steps, stored, args, print)
        except CalibrationFailed:
            return 1
        ok = True
        if "position" in new:
            pos = stored["position"]
            # Where the stored calibration puts the jig points measured just now.
            meas = np.asarray(new["position"]["slope_counts_per_m"]) * C.JIG_POINTS + np.asarray(
                new["position"]["offset_counts"])
            got = C.counts_to_position(meas, np.asarray(pos["slope_counts_per_m"]),
                                       np.asarray(pos["offset_counts"]))
            err = float(np.max(np.abs(got - C.JIG_POINTS))) * 1e3
            holds = err <= POSITION_TOL_MM
            ok &= holds
            print(f"position: jig points read within {err:.3f} mm with the stored profile "
                  f"(limit {POSITION_TOL_MM} mm): {'holds' if holds else 'DOES NOT HOLD'}")
        if "force" in new and "force" in stored:
            g_old = np.asarray(stored["force"]["gain"])
            rel = float(np.max(np.abs(np.asarray(new["force"]["gain"]) / g_old - 1.0)))
            holds = rel <= FORCE_TOL
            ok &= holds
            print(f"force: gain within {rel * 100:.2f} % of the stored profile (limit "
                  f"{FORCE_TOL * 100:g} %): {'holds' if holds else 'DOES NOT HOLD'}")
            d = abs(new["latency"]["one_way_ms"] - stored.get("latency", {}).get("one_way_ms", 0))
            holds = d <= LATENCY_TOL_MS
            ok &= holds
            print(f"latency: {new['latency']['one_way_ms']:.2f} ms, {d:.2f} ms from the stored "
                  f"profile (limit {LATENCY_TOL_MS} ms): {'holds' if holds else 'DOES NOT HOLD'}")
        print(f"profile {profile_path(dev.info.serial) if args.profile is None else args.profile}"
              f" {'holds' if ok else 'DOES NOT HOLD: recalibrate'} ({time.monotonic() - t0:.1f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, EOFError):
        return _fail("check interrupted; force zeroed")
    finally:
        dev.close()


def write_report(path: str, prof: dict) -> None:
    """An HTML page of a profile: what a lab files with the device (tables, no plots)."""
    import html

    def cell(v) -> str:
        if isinstance(v, list) and v and isinstance(v[0], list):
            return "<br>".join(cell(r) for r in v)
        if isinstance(v, list):
            return ", ".join(f"{x:.4g}" if isinstance(x, float) else html.escape(str(x)) for x in v)
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    parts = [f"<!doctype html><meta charset=utf-8><title>trocar calibration {html.escape(prof['serial'])}"
             "</title><style>td,th{border:1px solid #999;padding:2px 6px;text-align:left}"
             "table{border-collapse:collapse;margin-bottom:1em}</style>",
             f"<h1>Calibration of {html.escape(prof['serial'])}</h1><table>"]
    for key in ("created", "protocol", "firmware", "counts_per_m", "sha256"):
        parts.append(f"<tr><th>{key}</th><td>{cell(prof.get(key, ''))}</td></tr>")
    parts.append("</table>")
    for section in ("position", "workspace", "force", "latency"):
        if section not in prof:
            continue
        parts.append(f"<h2>{section}</h2><table>")
        for k, v in sorted(prof[section].items()):
            parts.append(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>")
        parts.append("</table>")
    if "jig_error_mm" in prof.get("position", {}):
        parts.append("<h2>jig points</h2><table><tr><th>hole</th><th>x, y, z [mm]</th>"
                     "<th>error x, y, z [mm]</th></tr>")
        for i, (p, e) in enumerate(zip(C.JIG_POINTS, prof["position"]["jig_error_mm"],
                                       strict=True), 1):
            parts.append(f"<tr><td>{i}</td><td>{cell([float(x) * 1e3 for x in p])}</td>"
                         f"<td>{cell(e)}</td></tr>")
        parts.append("</table>")
    with open(path, "w") as fh:
        fh.write("\n".join(parts) + "\n")


def _steps(text: str) -> list[str] | str:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        return f"unknown --steps {','.join(bad) or repr(text)}: choose from {','.join(STEPS)}"
    return steps


def add_arguments(cal: argparse.ArgumentParser, chk: argparse.ArgumentParser) -> None:
    """Options of `trocar device calibrate` and `trocar device check`."""
    for p in (cal, chk):
        p.add_argument("--reference-stiffness", type=float, default=200.0,
                       help="stiffness of the reference spring for the force step [N/m]")
        p.add_argument("--timeout", type=float, default=30.0,
                       help="longest wait for the sweep and jig presses [s] (default 30)")
        p.add_argument("--profile", help="profile file (default: per serial in the config dir)")
    cal.add_argument("port", nargs="?", help="serial port or pty path")
    cal.add_argument("--auto", action="store_true",
                     help="no prompts (scripted hands, the emulator): accept every passing step")
    cal.add_argument("--steps", default=",".join(STEPS), help="comma list: position,force")
    cal.add_argument("--report", metavar="FILE.html",
                     help="also write an HTML report of the profile (tables; no plots yet)")
    cal.add_argument("--write-jig-script", metavar="FILE",
                     help="write the reference jig procedure as an emulator hand script and exit")
    cal.add_argument("--workspace", type=float, nargs=3, default=(0.08, 0.08, 0.08),
                     help="half extents for --write-jig-script [m] (the device's INFO values)")
    chk.add_argument("port", help="serial port or pty path")
    chk.add_argument("--steps", help="comma list (default: what the profile has)")
