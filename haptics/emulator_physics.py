"""Emulated device physics: what the device's motor, encoders and handle do each device tick.

Owns the device state a firmware keeps between ticks and the simulated mechanics behind it, as
DevicePhysics, the base of haptics.emulator.Emulator (which owns the wire: the pty, frames,
commands, fault injection and the loop): the device watchdog (no FORCE for the watchdog period
-> fault latched until CMD ENABLE), the motor output (software force limit, ramp to zero within
RAMP_DOWN_S), the actuation/sensing latency rings, encoder quantisation and the miscalibration
knobs, the hand models that move the handle, and the STATE each tick reports.

Physical hands (`free`, `grip`; docs/calibration.md "The emulator's physical model"): the
handle is a mass with viscous friction, integrated in SUBSTEPS sub-steps per device tick with the
motor force held (zero-order hold, as a real amplifier holds its current between servo ticks),
loaded by gravity (an arm-weight model, `holding_force`) and, for `grip`, by a hand with its own
mass, damping and stiffness. A host-rendered virtual wall on it therefore has a stiffness limit
that follows from these numbers and the loop delay (sensing latency + sync ticks + actuation
latency), not from a number in INFO.
"""

from __future__ import annotations

import math
import time

from haptics import protocol as P
from haptics.emulator_config import EmulatorConfig

GRAVITY = 9.81  # [m/s^2]
SUBSTEPS = 10  # mechanics sub-steps per device tick for the physical hands (free, grip)
RAMP_DOWN_S = 0.005  # watchdog/disable ramp to zero [s]: a step would kick the handle


class DevicePhysics:
    """The device between its wire ends: `tick()` runs one device clock tick; the subclass
    (haptics.emulator.Emulator) supplies `send` and `event` and sets the commanded state."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        # device state
        self.seq = 0
        self.homed = cfg.homed
        self.enabled = False
        self.fault = False
        self.watchdog_tripped = False
        self.calibrated = True
        self.watchdog_s = cfg.watchdog_ms / 1000.0
        self.sw_max_force = cfg.max_force
        self.rate_hz = cfg.rate_hz
        self.cmd_force = [0.0, 0.0, 0.0]  # newest FORCE command [N]
        self.cmd_gripper = 0.0
        self.cmd_enable = False
        self.force_echo = 0
        self.out = [0.0, 0.0, 0.0]  # motor output the device believes it applies [N]
        self.out_gripper = 0.0
        self.clamped = False
        self.last_force_rx: float | None = None
        self.watchdog_trips = 0
        # hand / mechanics (device frame [m])
        self.p = list(cfg.hand_at)
        self.v = [0.0, 0.0, 0.0]
        self.grip = 0.3  # [rad]
        self.buttons = 0
        self.hand_kind = cfg.hand
        self.hand_t0 = 0.0  # script time origin [s after t0]
        self.due_forces: list[tuple[int, float, float, float, float, bool]] = []  # due seq, force
        n = max(cfg.latency_ms * cfg.rate_hz // 1000, 0) + 1
        self._lat_out = [(0.0, 0.0, 0.0)] * n  # ring of motor outputs (actuation delay)
        self._lat_pos = [tuple(self.p)] * n  # ring of positions (sensing delay)
        self._lat_i = 0
        self.t0 = time.monotonic()

    def send(self, frame: bytes) -> None:
        """Write one frame to the host (the wire is the subclass's)."""
        raise NotImplementedError

    def event(self, name: str, detail: str = "") -> None:
        """Record one rare event (the event log is the subclass's)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- tick
    def hand(self, t: float, fx: float, fy: float, fz: float, dt: float) -> None:
        """Move the handle for one tick under the true motor force (fx, fy, fz) [N]."""
        cfg = self.cfg
        kind = self.hand_kind
        t -= self.hand_t0
        if kind == "spring":
            k, m = cfg.hand_stiffness, cfg.hand_mass
            c = 2.0 * math.sqrt(k * m)
            p, v, a0 = self.p, self.v, cfg.hand_at
            g = (0.0, 0.0, 0.0) if not self._gravity else holding_force(cfg, p)
            for i, f in enumerate((fx, fy, fz)):
                v[i] += dt * (f - g[i] + k * (a0[i] - p[i]) - c * v[i]) / m
                p[i] += dt * v[i]
            self.grip = 0.3 + self.out_gripper / 2.0  # the fingers give 2 N/rad
        elif kind in ("free", "grip"):
            self._mechanics(fx, fy, fz, dt, kind == "grip")
        elif kind == "circle":
            w = 2.0 * math.pi * t / cfg.hand_period
            self.p = [cfg.hand_at[0] + cfg.hand_radius * math.cos(w),
                      cfg.hand_at[1] + cfg.hand_radius * math.sin(w), cfg.hand_at[2]]
        elif kind == "script" and cfg.script:
            rows = cfg.script
            if t <= rows[0][0]:
                row = rows[0]
            elif t >= rows[-1][0]:
                row = rows[-1]
            else:
                j = next(i for i in range(1, len(rows)) if rows[i][0] >= t)
                r0, r1 = rows[j - 1], rows[j]
                s = (t - r0[0]) / (r1[0] - r0[0])
                row = tuple(a + s * (b - a) for a, b in zip(r0, r1, strict=True))
                row = row[:5] + (rows[j - 1][5],) if len(row) > 5 else row
            self.p = [row[1], row[2], row[3]]
            if len(row) > 4:
                self.grip = row[4]
            if len(row) > 5:
                self.buttons = int(row[5])

    @property
    def _gravity(self) -> bool:
        return self.cfg.gravity_mass != 0.0 or self.cfg.arm_mass != 0.0

    def _mechanics(self, fx: float, fy: float, fz: float, dt: float, grip: bool) -> None:
        """Handle (and gripping hand) under motor force (fx, fy, fz) [N] held for one tick `dt`
        [s]: SUBSTEPS semi-implicit Euler sub-steps; the workspace ends are hard stops."""
        cfg = self.cfg
        m = cfg.handle_mass + (cfg.grip_mass if grip else 0.0)
        b = cfg.device_damping + (cfg.grip_damping if grip else 0.0)
        k = cfg.grip_stiffness if grip else 0.0
        a0, ws = cfg.grip_at, cfg.workspace
        p, v = self.p, self.v
        h = dt / SUBSTEPS
        f = (fx, fy, fz)
        for _ in range(SUBSTEPS):
            g = holding_force(cfg, p) if self._gravity else (0.0, 0.0, 0.0)
            for i in range(3):
                v[i] += h * (f[i] - g[i] + k * (a0[i] - p[i]) - b * v[i]) / m
                p[i] += h * v[i]
                if abs(p[i]) > ws[i]:  # the mechanical stop
                    p[i] = math.copysign(ws[i], p[i])
                    v[i] = 0.0

    def tick(self, now: float) -> None:
        """One device clock tick: watchdog, motor output, mechanics, STATE."""
        cfg = self.cfg
        dt = 1.0 / self.rate_hz
        if self.due_forces:
            q = (self.seq + 1) & 0xFFFFFFFF  # the STATE this tick sends
            due = None
            while self.due_forces and ((q - self.due_forces[0][0]) & 0xFFFFFFFF) < 0x80000000:
                due = self.due_forces.pop(0)
            if due is not None:
                _, self.cmd_force[0], self.cmd_force[1], self.cmd_force[2], self.cmd_gripper, \
                    self.cmd_enable = due
        if (self.enabled and self.last_force_rx is not None
                and now - self.last_force_rx > self.watchdog_s):
            ms = round((now - self.last_force_rx) * 1000)
            self.enabled = False
            self.fault = self.watchdog_tripped = True
            self.watchdog_trips += 1
            self.event("watchdog_trip", str(ms))
            self.send(P.encode(P.Fault(P.FAULT_WATCHDOG, ms)))
        out = self.out
        was_on = out[0] != 0.0 or out[1] != 0.0 or out[2] != 0.0
        if self.enabled and self.cmd_enable and not self.fault:
            fx, fy, fz = self.cmd_force
            mag = math.sqrt(fx * fx + fy * fy + fz * fz)
            self.clamped = mag > self.sw_max_force
            if self.clamped:
                s = self.sw_max_force / mag
                fx, fy, fz = fx * s, fy * s, fz * s
            out[0], out[1], out[2] = fx, fy, fz
            mg = cfg.max_gripper_force
            self.out_gripper = max(-mg, min(mg, self.cmd_gripper))
        else:
            # Ramp to zero: at most max_force per RAMP_DOWN_S.
            mag = math.sqrt(out[0] ** 2 + out[1] ** 2 + out[2] ** 2)
            step = cfg.max_force * dt / RAMP_DOWN_S
            s = 0.0 if mag <= step else (mag - step) / mag
            out[0] *= s
            out[1] *= s
            out[2] *= s
            self.out_gripper = 0.0
            self.clamped = False
        is_on = out[0] != 0.0 or out[1] != 0.0 or out[2] != 0.0
        if was_on != is_on:
            self.event("output_nonzero" if is_on else "output_zero")
        # latency ring: actuate the output from `latency` ticks ago, report the position likewise
        ring = self._lat_out
        i = self._lat_i
        ring[i] = (out[0], out[1], out[2])
        j = (i + 1) % len(ring)
        ax, ay, az = ring[j]
        ke = cfg.force_constant_error
        self.hand(now - self.t0, ax * (1 + ke[0]), ay * (1 + ke[1]), az * (1 + ke[2]), dt)
        self._lat_pos[i] = (self.p[0], self.p[1], self.p[2])
        px = self._lat_pos[j]
        self._lat_i = j
        cpm, ge, sg, off = cfg.counts_per_m, cfg.gain_error, cfg.axis_sign, cfg.encoder_offset
        counts = [round(sg[a] * (1 + ge[a]) * px[a] * cpm[a]) + off[a] for a in range(3)]
        status = ((P.STATUS_ENABLED if self.enabled else 0) | (P.STATUS_HOMED if self.homed else 0)
                  | (P.STATUS_FAULT if self.fault else 0)
                  | (P.STATUS_WATCHDOG if self.watchdog_tripped else 0)
                  | (P.STATUS_CLAMPED if self.clamped else 0)
                  | (P.STATUS_CALIBRATED if self.calibrated else 0))
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        t_us = int((now - self.t0) * 1e6) & 0xFFFFFFFF
        payload = P.STATE_STRUCT.pack(
            self.seq, t_us, counts[0], counts[1], counts[2],
            round(self.grip * cfg.gripper_counts_per_rad), self.buttons, status,
            round(out[0] * 1000), round(out[1] * 1000), round(out[2] * 1000), self.force_echo)
        self.send(P.encode_frame(P.MSG_STATE, payload))


def gravity_direction(tilt: tuple[float, float]) -> tuple[float, float, float]:
    """Unit vector of gravity in the device frame for a base tilted by tilt = (about x, then
    about y) [rad]; (0, 0, -1) when level."""
    tx, ty = tilt
    return (-math.sin(ty), math.cos(ty) * math.sin(tx), -math.cos(ty) * math.cos(tx))


def holding_force(cfg: EmulatorConfig, p) -> tuple[float, float, float]:
    """The force [N] that holds the handle still at position p [m] against gravity.

    Arm-weight model: the handle (gravity_mass [kg]) hangs at the tip of an arm, a uniform rod of
    arm_mass [kg] from a ball joint at arm_shoulder [m] to the handle. The joint carries the rod's
    load along the rod; the tip has to carry the handle's weight and half the rod's weight
    perpendicular to the rod (moments about the joint), so the holding force changes with the
    pose. Gravity is g = 9.81 m/s^2 along gravity_direction(tilt):
    ``H = -g [m_h d + (m_a / 2)(d - (d.u) u)]``, u the unit vector from the shoulder to p.
    """
    d = gravity_direction(cfg.tilt)
    s = cfg.arm_shoulder
    r = (p[0] - s[0], p[1] - s[1], p[2] - s[2])
    n = math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]) or 1.0
    u = (r[0] / n, r[1] / n, r[2] / n)
    du = d[0] * u[0] + d[1] * u[1] + d[2] * u[2]
    mh, ma = cfg.gravity_mass, 0.5 * cfg.arm_mass
    return tuple(-GRAVITY * (mh * d[i] + ma * (d[i] - du * u[i])) for i in range(3))
