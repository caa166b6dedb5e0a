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
from haptics.cli_errors import fail
from haptics.device import DeviceError
from haptics.profile import (
    ProfileError,
    load_for_device,
    load_profile,
    make_profile,
    profile_path,
    save_profile,
)
from haptics.safety import SOFT_RUN, SOFT_WAIT
from haptics.sched import request_fifo
from haptics.serial_device import SerialDevice

STEPS = ("position", "gravity", "force", "stability")  # also the order they run in
SECTIONS = ("position", "workspace", "gravity", "force", "latency", "stability")
POSITION_TOL_MM = 0.5  # `check`: jig points must read within this [mm]
FORCE_TOL = 0.02  # `check`: force gain within this (relative)
LATENCY_TOL_MS = 0.5  # `check`: one-way latency within this [ms]
MAX_JIG_RESIDUAL_MM = 1.0  # a jig fit worse than this fails the step (tip out of a hole) [mm]
GRAVITY_TOL_N = 0.08  # `check`: holding force within this of the stored model [N]
STABILITY_TOL = 0.10  # `check`: max stable stiffness within this (relative)
MAX_GRAVITY_RESIDUAL_N = 0.1  # a gravity fit worse than this fails the step [N]
HOLD_KP = 300.0  # gravity step: position hold stiffness [N/m] (far below any usable Z-width)
HOLD_KD = 3.0  # gravity step: position hold damping [N s/m]
STILL_M = 0.1e-3  # gravity step: a pose counts as held once the handle ends a window less than
# this from where it began it [m] (and moved less than 5x this within it)
WALL_DAMPING = 1.0  # stability step: the virtual wall's damping [N s/m]
WALL_K0 = 200.0  # stability step: first wall stiffness [N/m]
WALL_GROWTH = 1.3  # stability step: stiffness factor per level while increasing
WALL_K_CAP = 20000.0  # stability step: stop increasing here [N/m]
WALL_BISECTIONS = 4  # stability step: refinements between the last stable and first unstable
WALL_KICK_N = 1.0  # stability step: the kick that excites the wall [N], for WALL_KICK_S [s]
WALL_KICK_S = 0.005
WIZARD_FIFO_PRIORITY = 60  # SCHED_FIFO priority of the wizard's host loop, where permitted
WALL_TRIES = 15  # stability step: measurements per level before giving up on a clean one
WALL_UNSTEADY_FRACTION = 0.08  # stability step: a window in which more ticks than this applied a
# force answering another STATE than usual (the host was late for the device) is measured again
WALL_MIN_AMPLITUDE_M = 30e-6  # stability step: below this (3 counts here) a ratio is noise [m]


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
                  say, comp: _Compensation | None = None) -> tuple[dict, dict]:
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

        return _servo(dev, seconds, cmd, first=cmd(dev.read()))

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


def _servo(dev: SerialDevice, seconds: float, command, on_fresh=None, sent: dict | None = None,
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
    _pump(dev, dev.safety.ramp_s + 0.05)  # soft start at zero force
    _servo(dev, 0.05, lambda s: np.zeros(3), fresh)
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

        _servo(dev, move_s + settle_s, ramp, fresh)
        st["target"] = q
        # Hold until still: an averaging window whose handle moved less than STILL_M. A loaded
        # host (late ticks) settles slower; a hand on the handle never does.
        for _ in range(15):
            st["log"] = []
            st["clean"] = True
            _servo(dev, avg_s, command, fresh)
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
            raise CalibrationFailed(f"the handle did not stay still at pose {_fmt(q * 1e3)} mm "
                                    f"(moved {moved:.2f} mm; is something touching it?)")
        w = np.append(np.diff(log[:, 6]), 1.0)
        w = np.where(w > 0, w, 1.0)
        hold_pose.append(np.average(log[:, 0:3], axis=0, weights=w))
        holding.append(np.average(log[:, 3:6], axis=0, weights=w))
    _servo(dev, 0.1, lambda s: np.zeros(3), fresh)
    hp, h = np.array(hold_pose), np.array(holding)
    try:
        coef, resid = C.fit_gravity(hp, h)
    except ValueError as exc:
        raise CalibrationFailed(str(exc)) from None
    if np.max(resid) > MAX_GRAVITY_RESIDUAL_N:
        raise CalibrationFailed(f"gravity fit residual {_fmt(resid)} N > "
                                f"{MAX_GRAVITY_RESIDUAL_N} N (was the handle touched?)")
    return {"coefficients_cmd": coef, "features": list(C.GRAVITY_FEATURES), "residual_n": resid,
            "poses": len(hp), "pose_m": hp, "holding_n": h, "holding_mean_n": h.mean(axis=0),
            "holding_range_n": np.ptp(h, axis=0), "hold_stiffness_n_per_m": HOLD_KP}


def loop_lags(seq: np.ndarray, echo: np.ndarray, force_mn: np.ndarray, sent: dict,
              axis: int, *, horizon: int = 40) -> np.ndarray:
    """Per recorded STATE n: n minus the STATE answered by the FORCE the device applied at tick
    n [ticks], or -1 where that cannot be told. seq, echo (newest FORCE received), force_mn
    (force the device applied on `axis`, mN): shape (N,); sent: FORCE seq -> (STATE seq, fx,
    fy, fz mN). Told when, among the FORCE frames received by then that answered the last
    `horizon` STATEs, only those answering one STATE carried that force value (a still handle
    gets the same force many ticks running: then it cannot be told, and it does not matter)."""
    lag = np.full(len(seq), -1)
    if not sent:
        return lag
    ks = np.array(sorted(sent), dtype=np.int64)
    es = np.array([sent[k][0] for k in ks], dtype=np.int64)
    vals = np.array([sent[k][1 + axis] for k in ks], dtype=np.int64)
    for i in range(len(seq)):
        m = (ks <= echo[i]) & (es >= seq[i] - horizon)
        answered = np.unique(es[m & (vals == force_mn[i])])
        if len(answered) == 1 and np.any(m & (es < seq[i] - horizon // 2)):
            lag[i] = seq[i] - answered[0]
    return lag


def steady_loop(lag: np.ndarray) -> bool:
    """Whether the device applied, at (almost) every tick, the force answering the STATE the
    same number of ticks back: the loop being measured is then the device's own fixed-delay
    loop, whatever this host's scheduling (a device applying forces on a fixed schedule absorbs
    a late host; a late host on any other device shows up here as a longer, varying lag)."""
    known = lag[lag >= 0]
    if len(known) < 30:
        return True  # the force hardly changed: when it was applied makes no difference
    mode = np.bincount(known).argmax()
    return bool(np.mean(known != mode) <= WALL_UNSTEADY_FRACTION)


def measure_stability(dev: SerialDevice, position: dict, comp: _Compensation, say, *,
                      axis: int = 0) -> dict:
    """Step 7: a Z-width sweep. A one-sided virtual wall at the calibrated origin along +axis,
    F = -K x - WALL_DAMPING v inside it, rendered by this host at the device's STATE rate while
    the hand pushes into it. Per level: rest at half the last stable stiffness, switch to K, let
    it settle, kick it (WALL_KICK_N for WALL_KICK_S), record the handle, and call the level
    unstable when the oscillation grows (calibration.decay_ratio > 1). K grows by WALL_GROWTH
    until the first unstable level, then WALL_BISECTIONS geometric bisections. The largest
    stable K is the max stiffness the simulator may render on this device [N/m]."""
    name = "xyz"[axis]
    say(f"  hold the handle lightly and push it gently along +{name} into the virtual wall; it "
        "gets stiffer until it buzzes")
    rate = dev.spec.rate_hz or 1000
    st = {"K": 0.0, "p": None, "seq": 0, "v": np.zeros(3), "kick": 0.0, "log": None,
          "clean": True, "sent": {}}

    def fresh(s) -> None:
        p = comp.position(s.position_counts)
        if st["p"] is not None and s.seq != st["seq"]:
            st["v"] = (p - st["p"]) * rate / ((s.seq - st["seq"]) & 0xFFFFFFFF)
        st["p"], st["seq"] = p, s.seq
        if st["log"] is not None:
            v = P.STATE_STRUCT.unpack(dev._state_payload)
            st["log"].append((s.seq, p[axis], v[11], v[8 + axis]))
            # a link hiccup restarts the soft start: its ramp renders a softer wall than K
            st["clean"] &= dev.safety.phase == SOFT_RUN and dev.connected

    def wall(s) -> np.ndarray:
        f = np.zeros(3)
        x = st["p"][axis]
        if x > 0.0:
            f[axis] = -st["K"] * x - WALL_DAMPING * st["v"][axis]
        if st["kick"] and time.monotonic() < st["kick"]:
            f[axis] -= WALL_KICK_N
        return comp.command(f, st["p"])

    def level(K: float, k_rest: float) -> tuple[float, float]:
        # Rest (any oscillation of the last level dies out), then ramp the stiffness in slowly
        # (a step in K is a step in the wall's rest point: a kick far larger than the wall's
        # preload, which would bounce the handle off it), settle, then the small kick.
        st["K"] = k_rest
        _servo(dev, 0.25, wall, fresh)
        t0 = time.monotonic()

        def ramp(s):
            st["K"] = k_rest + (K - k_rest) * min((time.monotonic() - t0) / 0.1, 1.0)
            return wall(s)

        _servo(dev, 0.1, ramp, fresh)
        st["K"] = K
        _servo(dev, 0.1, wall, fresh)
        measured = None
        for tries in range(1, WALL_TRIES + 1):
            st["kick"] = time.monotonic() + WALL_KICK_S
            _servo(dev, 0.02, wall, fresh)
            st["log"] = []
            st["clean"] = dev.safety.phase == SOFT_RUN
            st["sent"] = {}
            _servo(dev, 0.34, wall, fresh, sent=st["sent"])
            log = np.array(st["log"], dtype=float).reshape(-1, 4)
            st["log"] = None
            st["kick"] = 0.0
            if len(log) < 100 or not st["clean"]:  # starved of CPU, or the link hiccuped
                continue
            # one sample per device tick (a lost frame is held): the halves are equal in time
            seq = log[:, 0].astype(np.int64)
            lag = loop_lags(seq, log[:, 2].astype(np.int64), log[:, 3].astype(np.int64),
                            st["sent"], axis)
            t = seq - seq[0]
            x = np.interp(np.arange(t[-1] + 1), t, log[:, 1])
            ratio, amp = C.decay_ratio(x)
            # Measure again if this host was late for the device (the loop measured would not
            # be the device's), or if the kick met an opposite swing (too small to judge).
            if not steady_loop(lag):
                continue
            measured = (ratio, amp, tries)
            if amp > WALL_MIN_AMPLITUDE_M:
                break
        if measured is None:
            raise CalibrationFailed(f"this host answered the device irregularly in all "
                                    f"{WALL_TRIES} tries at {K:.0f} N/m (the loop delay varied: "
                                    "is it overloaded?); the limit would be measured wrong")
        return measured

    _pump(dev, dev.safety.ramp_s + 0.05)
    _servo(dev, 0.3, wall, fresh)  # the hand comes to rest against the (soft) wall
    if st["p"] is None or st["p"][axis] <= 0.0:
        raise CalibrationFailed(f"the handle is not pushing into the wall along +{name}")
    ks, ratios, amps, stable, tries = [], [], [], [], []

    def run(K: float, k_rest: float) -> bool:
        r, a, n = level(K, k_rest)
        tries.append(n)
        ks.append(K)
        ratios.append(r)
        amps.append(a)
        stable.append(bool(r < 1.0))
        return stable[-1]

    lo, hi = 0.0, None
    K = WALL_K0
    while K <= WALL_K_CAP:
        if run(K, 0.5 * (lo or WALL_K0)):
            lo = K
            K *= WALL_GROWTH
        else:
            hi = K
            break
    if hi is None:
        raise CalibrationFailed(f"no oscillation up to {WALL_K_CAP:g} N/m (is the handle held "
                                "against the wall?)")
    if lo == 0.0:
        raise CalibrationFailed(f"the wall oscillates already at {WALL_K0:g} N/m")
    for _ in range(WALL_BISECTIONS):
        mid = float(np.sqrt(lo * hi))
        if run(mid, 0.5 * lo):
            lo = mid
        else:
            hi = mid
    st["K"] = 0.0
    _servo(dev, 0.05, lambda s: comp.command(np.zeros(3), st["p"]), fresh)
    return {"max_stiffness_n_per_m": lo, "first_unstable_n_per_m": hi,
            "wall_damping_ns_per_m": WALL_DAMPING, "axis": name, "sweep_k": ks,
            "sweep_ratio": ratios, "sweep_amplitude_m": amps, "sweep_stable": stable,
            "sweep_tries": tries}


def manual_force(dev: SerialDevice, position: dict, comp: _Compensation, args, say) -> dict:
    """Step 5 with a load cell (or spring scale) and a person: the device pushes a known command
    along +x, +y, +z in turn against the load cell the handle is fixed to, and the person types
    the reading [N]; gain = reading / command per axis. Readings come from stdin (EOFError when
    there is none). A stored gravity model is added to the pushes (the weight is not the motor)."""
    f_push = min(2.0, 0.4 * dev.spec.max_force)
    say(f"  fix the handle to a load cell (or spring scale); the device pushes {f_push:g} N along "
        "+x, +y, +z in turn: type each reading in newtons and press Enter")
    grav = comp.gravity_cmd

    def cmd(f, s):
        if grav is None or comp.slope is None:
            return f
        return f + C.gravity_force(grav, comp.position(s.position_counts))

    gain = np.zeros(3)
    _pump(dev, dev.safety.ramp_s + 0.05)
    for a in range(3):
        f = np.zeros(3)
        f[a] = f_push
        _servo(dev, 0.3, lambda s, f=f: cmd(f, s))
        while True:
            text = ask(dev, f"  reading along +{'xyz'[a]} [N]: ", lambda s, f=f: cmd(f, s))
            try:
                reading = float(text)
            except ValueError:
                say(f"  not a number: {text!r}")
                continue
            break
        gain[a] = reading / f_push
        _servo(dev, 0.2, lambda s: cmd(np.zeros(3), s))
    if np.any(gain <= 0.2) or np.any(gain >= 5.0):
        raise CalibrationFailed(f"force gains {_fmt(gain)} out of range (0.2, 5): wrong readings?")
    return {"gain": gain, "residual_n": np.zeros(3), "push_n": f_push, "reference": "load cell"}


class _Stdin:
    """Lines from fd 0 read without blocking, so the wizard keeps the device fed (FORCE is the
    heartbeat; a blocking input() would trip the device watchdog) while a person types."""

    buf = b""

    @classmethod
    def line(cls, dev: SerialDevice, command) -> str:
        import os
        import select

        while b"\n" not in cls.buf:
            s = dev.read()
            dev.write_force(command(s) if s.connected and dev.states else np.zeros(3))
            r, _, _ = select.select([0], [], [], 0.001)
            if r:
                data = os.read(0, 4096)
                if not data:
                    if cls.buf:
                        break
                    raise EOFError
                cls.buf += data
        line, _, cls.buf = cls.buf.partition(b"\n")
        return line.decode(errors="replace").strip()


def ask(dev: SerialDevice, prompt: str, command=None) -> str:
    """Prompt and read one line from stdin while the host loop runs (command(sample) -> force
    [N, motor units]; zero by default). EOFError when stdin is closed or empty."""
    print(prompt, end="", flush=True)
    return _Stdin.line(dev, command or (lambda s: np.zeros(3)))


# ---------------------------------------------------------------------------------- commands

def _open(port: str) -> RecordingDevice:
    # Steps are the measurement: no dF/dt smoothing (it would blur the step onset), a short soft
    # start, and forgiving watchdogs (host 200 ms, device 250 ms) for the wizard's Python loop on
    # a loaded machine: a trip mid-step would spoil the measurement, and the device still stops
    # within 250 ms if the host dies. The clamp stays.
    # The wizard's loop is a haptic servo: SCHED_FIFO where permitted (haptics.sched), below the
    # runtime servo's 80 and above an emulator's 50.
    request_fifo(WIZARD_FIFO_PRIORITY)
    dev = RecordingDevice(port, max_rate=1e6, ramp_s=0.1, state_timeout_s=0.2,
                          handshake_timeout_s=3.0, auto_reconnect=False, watchdog_ms=250)
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


FIXTURES = {  # step -> (emulator hand, what a person does)
    "position": ("script", "the jig plate mounted; you will sweep and press the jig holes"),
    "gravity": ("free", "let go of the handle (nothing may touch it); the device holds it"),
    "force": ("spring", "attach the handle to the reference spring and let go"),
    "stability": ("grip", "hold the handle lightly and push it gently along +x into the wall"),
}


def _fixture(dev: SerialDevice, step: str, auto: bool, say) -> None:
    """Get the fixture of `step` in place. An emulator is told with EMU_SET_HAND (it plays the
    person); a real device answers "unknown opcode", and then a person is asked (not in --auto,
    where the fixture is assumed in place, as with a scripted jig)."""
    from haptics.emulator import EMU_SET_HAND, HANDS

    hand, what = FIXTURES[step]
    dev.acks.pop(EMU_SET_HAND, None)
    dev.command(EMU_SET_HAND, HANDS.index(hand))
    _pump(dev, 0.5, until=lambda: EMU_SET_HAND in dev.acks)
    ack = dev.acks.get(EMU_SET_HAND)
    if ack is not None and ack.result == P.ACK_OK:
        return
    if not auto and step != "position":
        ask(dev, f"  {what}; then press Enter: ")


def _position_for(step: str, out: dict, stored: dict | None) -> dict:
    """The position calibration a later step builds on: this session's, else the stored profile's."""
    pos = out.get("position") or (stored or {}).get("position")
    if pos is None:
        raise CalibrationFailed(f"the {step} step needs the position calibration "
                                "(run --steps position first)")
    return pos


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:+.4g}" for x in np.asarray(v, dtype=float)) + ")"


def _run_steps(dev: RecordingDevice, steps: list[str], stored: dict | None, args,
               say) -> dict:
    info = dev.info
    out: dict = {}
    guided = not args.auto
    for step in [s for s in STEPS if s in steps]:
        while True:
            say(f"step {step}:")
            try:
                _fixture(dev, step, args.auto, say)
                comp = _compensation(out, stored)
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
                    if args.manual_force:
                        out["force"] = manual_force(dev, pos, comp, args, say)
                    else:
                        out["force"], out["latency"] = measure_force(
                            dev, info, pos, args.reference_stiffness, say, comp)
                    f = out["force"]
                    say(f"  force gain {_fmt(f['gain'])} (residual {_fmt(f['residual_n'])} N)"
                        + ("" if args.manual_force else ": pass"))
                    lat = out.get("latency")
                    if lat is not None and not args.manual_force:
                        say(f"  latency {lat['one_way_ms']:.2f} ms one way ({lat['trials']} "
                            f"steps), round trip p50 {lat['rtt_p50_us']:.0f} us p99 "
                            f"{lat['rtt_p99_us']:.0f} us, STATE {lat['state_rate_hz']:.0f} Hz: "
                            f"pass")
                elif step == "gravity":
                    pos = _position_for(step, out, stored)
                    out["gravity"] = measure_gravity(dev, info, pos, say)
                    g = out["gravity"]
                    say(f"  holding force {_fmt(g['holding_mean_n'])} N mean over "
                        f"{g['poses']} poses, range {_fmt(g['holding_range_n'])} N, fit residual "
                        f"{_fmt(g['residual_n'])} N: pass")
                elif step == "stability":
                    pos = _position_for(step, out, stored)
                    out["stability"] = measure_stability(dev, pos, comp, say)
                    s = out["stability"]
                    say(f"  max stable stiffness {s['max_stiffness_n_per_m']:.0f} N/m (wall "
                        f"damping {s['wall_damping_ns_per_m']:g} N s/m, first oscillation at "
                        f"{s['first_unstable_n_per_m']:.0f} N/m, {len(s['sweep_k'])} levels): "
                        f"pass")
            except CalibrationFailed as exc:
                dev.zero()
                say(f"  FAIL: {exc}")
                if guided and ask(dev, "  r = redo, anything else = stop: ").lower() == "r":
                    continue
                raise
            if guided and ask(dev, "  Enter = accept, r = redo: ").lower() == "r":
                continue
            break
    if "gravity" in out:
        # Measured as motor commands; in newtons through this calibration's force gains (the
        # model is linear in its coefficients, so per-axis gains scale it exactly).
        g = out["gravity"]
        gain = np.asarray((out.get("force") or (stored or {}).get("force") or
                           {"gain": [1.0, 1.0, 1.0]})["gain"], dtype=float)
        coef = np.asarray(g.pop("coefficients_cmd")) * gain[:, None]
        g["coefficients"] = coef
        g["force_gain_applied"] = gain
        g["holding_n"] = np.asarray(g["holding_n"]) * gain
        g["holding_mean_n"] = np.asarray(g["holding_mean_n"]) * gain
        g["holding_range_n"] = np.asarray(g["holding_range_n"]) * gain
        g["residual_n"] = np.asarray(g["residual_n"]) * gain
    return out


class _Compensation:
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


def _compensation(out: dict, stored: dict | None) -> _Compensation:
    stored = stored or {}
    pos = out.get("position") or stored.get("position")
    force = out.get("force") or stored.get("force")
    gain = np.asarray(force["gain"], dtype=float) if force else np.ones(3)
    grav = None
    if "gravity" in out:
        grav = np.asarray(out["gravity"]["coefficients_cmd"], dtype=float)
    elif "gravity" in stored:
        grav = np.asarray(stored["gravity"]["coefficients"], dtype=float) / gain[:, None]
    return _Compensation(pos, gain, grav)


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.write_jig_script:
        C.write_jig_script(args.write_jig_script, np.array(args.workspace))
        print(f"jig script written to {args.write_jig_script}")
        return 0
    if not args.port:
        return fail("calibrate needs PORT (or --write-jig-script FILE)")
    steps = _steps(args.steps)
    if isinstance(steps, str):
        return fail(steps)
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    if args.force_reference == "load-cell" and args.auto:
        return fail("--force-reference load-cell needs a person typing readings (not --auto)")
    args.manual_force = (args.force_reference or ("spring" if args.auto else "load-cell")) \
        == "load-cell" and "force" in steps
    say = print
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return fail(str(exc))
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
        body = {k: v for k, v in (stored or {}).items() if k in SECTIONS}
        body.update(new)
        path = save_profile(make_profile(info, body), args.profile)
        dev.command(P.CMD_SAVE_CALIBRATION)
        _pump(dev, 0.05)
        say(f"profile written: {path}")
        if args.report:
            from haptics.calibration_report import write_report

            try:
                write_report(args.report, load_profile(path, info=info))
            except OSError as exc:
                return fail(f"cannot write report {args.report}: {exc.strerror}")
            say(f"report written: {args.report}")
        return 0
    except EOFError:
        print()
        return fail("no answer on stdin (closed or not a terminal, e.g. CI): the guided steps "
                     "need a person typing; use --auto with the emulator or a scripted hand. "
                     "Force zeroed, profile not written")
    except KeyboardInterrupt:
        return fail("calibration interrupted; force zeroed, profile not written")
    finally:
        dev.close()


def cmd_check(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return fail(str(exc))
    try:
        try:
            stored = (load_for_device(dev.info) if args.profile is None
                      else load_profile(args.profile, info=dev.info))
        except ProfileError as exc:
            dev.close()
            return fail(str(exc))
        steps = _steps(args.steps) if args.steps else [s for s in STEPS if s in stored]
        if isinstance(steps, str):
            return fail(steps)
        args.auto = True
        args.manual_force = False
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
        if "force" in new and "force" in stored and "latency" in new:
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
        if "gravity" in new and "gravity" in stored:
            g = new["gravity"]
            old = C.gravity_force(np.asarray(stored["gravity"]["coefficients"]),
                                  np.asarray(g["pose_m"]))
            err = float(np.max(np.abs(np.asarray(g["holding_n"]) - old)))
            holds = err <= GRAVITY_TOL_N
            ok &= holds
            print(f"gravity: holding force within {err:.3f} N of the stored model (limit "
                  f"{GRAVITY_TOL_N} N): {'holds' if holds else 'DOES NOT HOLD'}")
        if "stability" in new and "stability" in stored:
            k_new = new["stability"]["max_stiffness_n_per_m"]
            k_old = stored["stability"]["max_stiffness_n_per_m"]
            rel = abs(k_new / k_old - 1.0)
            holds = rel <= STABILITY_TOL
            ok &= holds
            print(f"stability: max stable stiffness {k_new:.0f} N/m, {rel * 100:.1f} % from the "
                  f"stored {k_old:.0f} N/m (limit {STABILITY_TOL * 100:g} %): "
                  f"{'holds' if holds else 'DOES NOT HOLD'}")
        print(f"profile {profile_path(dev.info.serial) if args.profile is None else args.profile}"
              f" {'holds' if ok else 'DOES NOT HOLD: recalibrate'} ({time.monotonic() - t0:.1f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, EOFError):
        return fail("check interrupted; force zeroed")
    finally:
        dev.close()


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
    cal.add_argument("--steps", default=",".join(STEPS),
                     help="comma list: position,gravity,force,stability (default all; they run "
                          "in that order)")
    cal.add_argument("--force-reference", choices=("spring", "load-cell"),
                     help="force step: the reference spring (default with --auto) or load-cell "
                          "readings typed by a person (default without --auto)")
    cal.add_argument("--report", metavar="FILE.html",
                     help="also write an HTML report of the profile with plots (workspace, "
                          "residuals, force fit, gravity, stability sweep, latency)")
    cal.add_argument("--write-jig-script", metavar="FILE",
                     help="write the reference jig procedure as an emulator hand script and exit")
    cal.add_argument("--workspace", type=float, nargs=3, default=(0.08, 0.08, 0.08),
                     help="half extents for --write-jig-script [m] (the device's INFO values)")
    chk.add_argument("port", help="serial port or pty path")
    chk.add_argument("--steps", help="comma list (default: what the profile has)")
