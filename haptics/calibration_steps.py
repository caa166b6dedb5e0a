"""The calibration wizard's measurements: recording a device's STATE stream while it is driven,
the host loops that drive it (`pump`, `servo`), and each step's measurement (jig cycle and
position fit, force pushes and latency, gravity holding, virtual-wall stability).

Used by `haptics.calibrate_cli` (the wizard and its commands), which owns pacing, fixtures,
prompts and profiles; the fits themselves are in `haptics.calibration`. Units: m, N, s; device
counts where named.
"""

from __future__ import annotations

import time

import numpy as np

from haptics import calibration as C
from haptics import protocol as P
from haptics.safety import SOFT_RUN, SOFT_WAIT
from haptics.serial_device import SerialDevice

MAX_JIG_RESIDUAL_MM = 1.0  # a jig fit worse than this fails the step (tip out of a hole) [mm]
MAX_GRAVITY_RESIDUAL_N = 0.1  # a gravity fit worse than this fails the step [N]
HOLD_KP = 300.0  # gravity step: position hold stiffness [N/m] (far below any usable Z-width)
HOLD_KD = 3.0  # gravity step: position hold damping [N s/m]
STILL_M = 0.1e-3  # gravity step: a pose counts as held once the handle ends a window less than
# this from where it began it [m] (and moved less than 5x this within it)



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


def pump(dev: SerialDevice, seconds: float, force=(0.0, 0.0, 0.0), until=None) -> None:
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
            pump(dev, 0.05)
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
                  say, comp: Compensation | None = None) -> tuple[dict, dict]:
    """Static pushes on the reference spring -> (force, latency) sections. With a gravity model
    in `comp`, its holding force is added to every command (the handle's weight would otherwise
    add its own pose-dependent spring to the reference)."""
    say(f"  attach the handle to the reference spring ({stiffness:g} N/m) and let go")
    slope = np.asarray(position["slope_counts_per_m"], dtype=float)
    off = np.asarray(position["offset_counts"], dtype=float)
    f_push = min(3.0, 0.6 * dev.spec.max_force)
    settle = 0.4
    dev.rows = []
    dev.recording = True
    pushes = []  # (force vector, step FORCE seq on, step FORCE seq off)
    hold = None
    if comp is not None and comp.gravity_cmd is not None:
        def hold(s):  # noqa: E306 - gravity compensation at the handle's calibrated position
            return C.gravity_force(comp.gravity_cmd, C.counts_to_position(s.position_counts,
                                                                          slope, off))
    zero = np.zeros(3)

    def pump(seconds: float, f) -> bool:
        """Hold force f (+ gravity) for `seconds`; False if the link was not clean meanwhile."""
        def cmd(s):
            return f if hold is None else f + hold(s)

        return servo(dev, seconds, cmd, first=cmd(dev.read()))

    try:
        pump(settle + dev.safety.ramp_s, zero)  # soft start ramps in at zero force; at rest
        for a in range(3):
            for sgn in (1.0, -1.0):
                f = np.zeros(3)
                f[a] = sgn * f_push
                for _ in range(3):
                    s = dev.read()
                    dev.write_force(f if hold is None else f + hold(s))
                    k_on = dev._force_seq
                    ok = pump(settle, f)
                    s = dev.read()
                    dev.write_force(zero if hold is None else hold(s))
                    k_off = dev._force_seq
                    ok &= pump(settle, zero)
                    if ok:  # else a link hiccup (soft start ramp) spoilt the push: push again
                        pushes.append((f, k_on, k_off))
                        break
                else:
                    raise CalibrationFailed("the link hiccuped during every try of a force "
                                            "push (is this host overloaded?)")
        rtt = dev.rtt_percentiles((50, 99))
        n_rtt = min(dev.rtt_count, len(dev.rtt_us))
        counts_h, edges_h = np.histogram(dev.rtt_us[:n_rtt], bins=40)
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
               "rtt_p50_us": rtt[0], "rtt_p99_us": rtt[1],
               "rtt_jitter_us": rtt[1] - rtt[0],
               "rtt_histogram": {"edges_us": edges_h, "counts": counts_h}}
    force = {"gain": gain, "residual_n": resid, "reference_stiffness_n_per_m": stiffness,
             "push_n": f_push, "pushes_commanded_n": np.array(commanded),
             "pushes_true_n": stiffness * np.array(disp)}
    return force, latency


def servo(dev: SerialDevice, seconds: float, command, on_fresh=None, sent: dict | None = None,
           check=None, first=None) -> bool:
    """Host loop for `seconds` [s] whose FORCE is command(sample) [N, motor units]; on_fresh
    (sample) is called once per new STATE, before the command is computed; sent, if given,
    maps each FORCE seq to (the STATE seq it answered, its force x, y, z [mN] as sent);
    first: the command until the first new
    STATE (default zero). Returns False if the link was not clean throughout (a soft start after
    a hiccup, or check(sample) false for some fresh sample)."""
    clean = True
    t_end = time.monotonic() + seconds
    zero = np.zeros(3)
    cmd = zero if first is None else first
    while time.monotonic() < t_end:
        s = dev.read()
        if s.fresh:
            if on_fresh is not None:
                on_fresh(s)
            cmd = command(s)
            if check is not None and not check(s):
                clean = False
        # After a link hiccup the soft start waits for a small command: give it one, then it
        # ramps this loop's command back in.
        dev.write_force(zero if dev.safety.phase == SOFT_WAIT else cmd)
        clean &= dev.safety.phase == SOFT_RUN and dev.connected
        if sent is not None:
            sent[dev._force_seq] = (dev._last_seq or 0, *(round(x * 1000)
                                                         for x in dev.last_force_sent))
        dev.wait(0.001)
    return clean


def measure_gravity(dev: SerialDevice, info: P.Info, position: dict, say, *,
                    grid: int = 3) -> dict:
    """Step 6: hold the free handle still at each pose of a grid (a PD position hold, HOLD_KP
    [N/m], HOLD_KD [N s/m]) and average the motor command once it is still: with nothing
    touching the handle, that command is the holding force against gravity (in motor units;
    _run_steps scales it to newtons with the force gains). Fits calibration.fit_gravity."""
    say("  let go of the handle; the device moves it through "
        f"{grid ** 3} poses and measures the force that holds it still there")
    slope = np.asarray(position["slope_counts_per_m"], dtype=float)
    off = np.asarray(position["offset_counts"], dtype=float)
    poses = C.gravity_grid(np.asarray(info.workspace_m), n=grid)
    move_s, settle_s, avg_s = 0.12, 0.15, 0.12
    st = {"target": np.zeros(3), "p": None, "seq": 0, "v": np.zeros(3), "log": None,
          "clean": True}

    def fresh(s) -> None:
        p = C.counts_to_position(s.position_counts, slope, off)
        if st["p"] is not None and s.seq != st["seq"]:
            st["v"] = (p - st["p"]) * info.rate_hz / ((s.seq - st["seq"]) & 0xFFFFFFFF)
        st["p"], st["seq"] = p, s.seq

    def command(s) -> np.ndarray:
        cmd = HOLD_KP * (st["target"] - st["p"]) - HOLD_KD * st["v"]
        if st["log"] is not None:
            st["log"].append((*st["p"], *cmd, st["seq"]))
            # while a soft start ramps (after a link hiccup) the output is not the command
            st["clean"] &= dev.safety.phase == SOFT_RUN and dev.connected
        return cmd

    hold_pose, holding = [], []
    pump(dev, dev.safety.ramp_s + 0.05)  # soft start at zero force
    servo(dev, 0.05, lambda s: np.zeros(3), fresh)
    if st["p"] is None:
        raise CalibrationFailed("no STATE frames from the device")
    start = st["p"].copy()
    st["target"] = start
    for q in poses:
        a = st["target"].copy()
        t0 = time.monotonic()

        def ramp(s, a=a, q=q, t0=t0):
            st["target"] = a + (q - a) * min((time.monotonic() - t0) / move_s, 1.0)
            return command(s)

        servo(dev, move_s + settle_s, ramp, fresh)
        st["target"] = q
        # Hold until still: an averaging window whose handle moved less than STILL_M. A loaded
        # host (late ticks) settles slower; a hand on the handle never does.
        for _ in range(15):
            st["log"] = []
            st["clean"] = True
            servo(dev, avg_s, command, fresh)
            log = np.array(st["log"]).reshape(-1, 7)
            st["log"] = None
            if len(log) < 20 or not st["clean"]:
                continue
            # Momentum: over a window that starts and ends at rest, the time-average of the
            # applied force equals the average holding force (+ damping x net displacement /
            # window, which the STILL_M limit keeps below 0.01 N). Each command acts until the
            # next one: weight it by the device ticks it was held.
            net = np.abs(log[:10, 0:3].mean(axis=0) - log[-10:, 0:3].mean(axis=0))
            if np.max(net) <= STILL_M and np.max(np.ptp(log[:, 0:3], axis=0)) <= 5 * STILL_M:
                break
        else:
            moved = np.max(np.ptp(log[:, 0:3], axis=0)) * 1e3 if len(log) else float("nan")
            raise CalibrationFailed(f"the handle did not stay still at pose {fmt(q * 1e3)} mm "
                                    f"(moved {moved:.2f} mm; is something touching it?)")
        w = np.append(np.diff(log[:, 6]), 1.0)
        w = np.where(w > 0, w, 1.0)
        hold_pose.append(np.average(log[:, 0:3], axis=0, weights=w))
        holding.append(np.average(log[:, 3:6], axis=0, weights=w))
    servo(dev, 0.1, lambda s: np.zeros(3), fresh)
    hp, h = np.array(hold_pose), np.array(holding)
    try:
        coef, resid = C.fit_gravity(hp, h)
    except ValueError as exc:
        raise CalibrationFailed(str(exc)) from None
    if np.max(resid) > MAX_GRAVITY_RESIDUAL_N:
        raise CalibrationFailed(f"gravity fit residual {fmt(resid)} N > "
                                f"{MAX_GRAVITY_RESIDUAL_N} N (was the handle touched?)")
    return {"coefficients_cmd": coef, "features": list(C.GRAVITY_FEATURES), "residual_n": resid,
            "poses": len(hp), "pose_m": hp, "holding_n": h, "holding_mean_n": h.mean(axis=0),
            "holding_range_n": np.ptp(h, axis=0), "hold_stiffness_n_per_m": HOLD_KP}


class Compensation:
    """What the wizard adds to its own test forces once parts are calibrated: calibrated
    positions [m], force gains, and the gravity model (in motor-command units)."""

    def __init__(self, position: dict | None, gain: np.ndarray, gravity_cmd: np.ndarray | None):
        self.slope = None if position is None else np.asarray(position["slope_counts_per_m"], float)
        self.offset = None if position is None else np.asarray(position["offset_counts"], float)
        self.gain = gain
        self.gravity_cmd = gravity_cmd

    def position(self, counts) -> np.ndarray:
        return C.counts_to_position(counts, self.slope, self.offset)

    def command(self, force_n, p) -> np.ndarray:
        """Motor command for a wanted force [N] at calibrated position p [m]."""
        cmd = np.asarray(force_n, dtype=float) / self.gain
        if self.gravity_cmd is not None:
            cmd = cmd + C.gravity_force(self.gravity_cmd, p)
        return cmd


def compensation(out: dict, stored: dict | None) -> Compensation:
    stored = stored or {}
    pos = out.get("position") or stored.get("position")
    force = out.get("force") or stored.get("force")
    gain = np.asarray(force["gain"], dtype=float) if force else np.ones(3)
    grav = None
    if "gravity" in out:
        grav = np.asarray(out["gravity"]["coefficients_cmd"], dtype=float)
    elif "gravity" in stored:
        grav = np.asarray(stored["gravity"]["coefficients"], dtype=float) / gain[:, None]
    return Compensation(pos, gain, grav)


def fmt(v) -> str:
    """A vector as "(+1.234, -5.6, ...)" for the wizard's lines."""
    return "(" + ", ".join(f"{x:+.4g}" for x in np.asarray(v, dtype=float)) + ")"
