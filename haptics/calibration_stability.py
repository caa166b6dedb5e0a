"""The calibration wizard's stability step: the largest virtual-wall stiffness [N/m] the device holds
without oscillating, found by raising the wall's stiffness and bisecting between the last steady
and the first oscillating level, with loop lags checked so that a late host loop is measured
again rather than blamed on the device.

Used by `haptics.calibrate_cli`; the host loops and the shared pieces are in
`haptics.calibration_steps`.
"""

from __future__ import annotations

import time

import numpy as np

from haptics import calibration as C
from haptics import protocol as P
from haptics.calibration_steps import (
    CalibrationFailed,
    Compensation,
    pump,
    servo,
)
from haptics.safety import SOFT_RUN
from haptics.serial_device import SerialDevice

WALL_DAMPING = 1.0  # stability step: the virtual wall's damping [N s/m]
WALL_K0 = 200.0  # stability step: first wall stiffness [N/m]
WALL_GROWTH = 1.3  # stability step: stiffness factor per level while increasing
WALL_K_CAP = 20000.0  # stability step: stop increasing here [N/m]
WALL_BISECTIONS = 4  # stability step: refinements between the last stable and first unstable
WALL_KICK_N = 1.0  # stability step: the kick that excites the wall [N], for WALL_KICK_S [s]
WALL_KICK_S = 0.005
WALL_TRIES = 15  # stability step: measurements per level before giving up on a clean one
WALL_UNSTEADY_FRACTION = 0.08  # stability step: a window in which more ticks than this applied a
# force answering another STATE than usual (the host was late for the device) is measured again
WALL_MIN_AMPLITUDE_M = 30e-6  # stability step: below this (3 counts here) a ratio is noise [m]


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


def measure_stability(dev: SerialDevice, position: dict, comp: Compensation, say, *,
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
        servo(dev, 0.25, wall, fresh)
        t0 = time.monotonic()

        def ramp(s):
            st["K"] = k_rest + (K - k_rest) * min((time.monotonic() - t0) / 0.1, 1.0)
            return wall(s)

        servo(dev, 0.1, ramp, fresh)
        st["K"] = K
        servo(dev, 0.1, wall, fresh)
        measured = None
        for tries in range(1, WALL_TRIES + 1):
            st["kick"] = time.monotonic() + WALL_KICK_S
            servo(dev, 0.02, wall, fresh)
            st["log"] = []
            st["clean"] = dev.safety.phase == SOFT_RUN
            st["sent"] = {}
            servo(dev, 0.34, wall, fresh, sent=st["sent"])
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

    pump(dev, dev.safety.ramp_s + 0.05)
    servo(dev, 0.3, wall, fresh)  # the hand comes to rest against the (soft) wall
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
    servo(dev, 0.05, lambda s: comp.command(np.zeros(3), st["p"]), fresh)
    return {"max_stiffness_n_per_m": lo, "first_unstable_n_per_m": hi,
            "wall_damping_ns_per_m": WALL_DAMPING, "axis": name, "sweep_k": ks,
            "sweep_ratio": ratios, "sweep_amplitude_m": amps, "sweep_stable": stable,
            "sweep_tries": tries}
