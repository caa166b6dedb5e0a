"""Device emulator: a 3-DOF force device with a gripper and two buttons behind a real pty.

Owns the device side of the protocol as firmware would implement it: a device clock streaming
STATE at the stream rate, encoder quantisation, the motor force limit, the device watchdog (no
FORCE for the watchdog period -> force ramps to zero within RAMP_DOWN_S, fault latched until
CMD ENABLE), a hand model that moves the handle, miscalibration knobs (for calibration work) and
fault injection (for tests). Runs as its own process: ``trocar device emulate`` or
``python -m haptics.emulator``; prints the pty slave path as the first line of stdout.

An optional event log (``--event-log FILE``) records, with time.monotonic() [s] stamps, what a
scope on the motor would show (output_zero, watchdog_trip, unplug, ...), so tests can check the
device side of a fault from outside the process. Its settings and command line are
`haptics.emulator_config`.

Physical hands (`free`, `grip`; docs/calibration.md "The emulator's physical model"): the
handle is a mass with viscous friction, integrated in SUBSTEPS sub-steps per device tick with the
motor force held (zero-order hold, as a real amplifier holds its current between servo ticks),
loaded by gravity (an arm-weight model, `holding_force`) and, for `grip`, by a hand with its own
mass, damping and stiffness. A host-rendered virtual wall on it therefore has a stiffness limit
that follows from these numbers and the loop delay (sensing latency + sync ticks + actuation
latency), not from a number in INFO. The hand can be changed within a session with the
emulator-only CMD EMU_SET_HAND, so one `calibrate --auto` session can use every fixture.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import random
import select
import signal
import sys
import time
import tty

from haptics import protocol as P
from haptics.cli_errors import fail
from haptics.emulator_config import (
    HANDS,
    EmulatorArgError,
    EmulatorConfig,
    add_arguments,
    config_from_args,
)
from haptics.sched import request_fifo

GRAVITY = 9.81  # [m/s^2]
SUBSTEPS = 10  # mechanics sub-steps per device tick for the physical hands (free, grip)
# Emulator-only command (a vendor opcode outside the protocol's 1..9): change the hand model
# (the fixture a calibration step needs). arg: an index into HANDS. A real device answers ACK
# result 1 (unknown opcode), which is how the wizard knows a person must change the fixture.
EMU_SET_HAND = 200
RAMP_DOWN_S = 0.005  # watchdog/disable ramp to zero [s]: a step would kick the handle
HOST_SILENCE_S = 0.2  # a frame after this much silence counts as a host (re)connecting [s]


class Emulator:
    """The device. `run()` owns the loop; everything else is per-tick state."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.master = -1
        self.slave = -1
        self.path = ""
        self.decoder = P.FrameDecoder()
        self.stop = False
        self._log = open(cfg.event_log, "a", buffering=1) if cfg.event_log else None  # noqa: SIM115
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
        self.latest_answer = 0  # newest STATE seq a FORCE has answered (its state_echo)
        self.out = [0.0, 0.0, 0.0]  # motor output the device believes it applies [N]
        self.out_gripper = 0.0
        self.clamped = False
        self.last_force_rx: float | None = None
        self.last_rx = -1e9
        self.host_t0: float | None = None
        # counters
        self.force_frames = 0
        self.force_gaps = 0
        self.watchdog_trips = 0
        self.overruns = 0
        self.tx_dropped = 0
        # hand / mechanics (device frame [m])
        self.p = list(cfg.hand_at)
        self.v = [0.0, 0.0, 0.0]
        self.grip = 0.3  # [rad]
        self.buttons = 0
        self.hand_kind = cfg.hand
        self.hand_t0 = 0.0  # script time origin [s after t0]
        self._sync: list[tuple[int, float, float, float, float, bool]] = []  # due seq, force
        n = max(cfg.latency_ms * cfg.rate_hz // 1000, 0) + 1
        self._lat_out = [(0.0, 0.0, 0.0)] * n  # ring of motor outputs (actuation delay)
        self._lat_pos = [tuple(self.p)] * n  # ring of positions (sensing delay)
        self._lat_i = 0
        self._stalled = False
        self._info_lost = 0  # INFO frames corrupted since the pty opened (lose_info)
        self._silent = False
        self._unplugged_at: float | None = None
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------------------------ io
    def event(self, name: str, detail: str = "") -> None:
        """Append one line to the event log (rare events only, never per frame)."""
        if self._log is not None:
            self._log.write(f"{time.monotonic():.6f} {name} {detail}\n")

    def open_pty(self) -> str:
        """Open a pty pair; the slave is raw (no echo, no newline translation) and kept open."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        if self.cfg.link:
            tmp = f"{self.cfg.link}.tmp{os.getpid()}"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(self.path, tmp)
            os.replace(tmp, self.cfg.link)  # atomic: a host never sees a missing link mid-swap
        self.decoder.reset()
        self._info_lost = 0
        self.event("pty", self.path)
        return self.path

    def close_pty(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def send(self, frame: bytes) -> None:
        """Write one frame, applying the byte/frame fault injections."""
        if self.master < 0 or self._silent:
            return
        cfg = self.cfg
        rng = self.rng
        if cfg.drop_bytes or cfg.flip_bits:
            b = bytearray()
            for x in frame:
                if cfg.drop_bytes and rng.random() < cfg.drop_bytes:
                    continue
                if cfg.flip_bits and rng.random() < cfg.flip_bits:
                    x ^= 1 << rng.randrange(8)
                b.append(x)
            frame = bytes(b)
        if cfg.truncate and rng.random() < cfg.truncate:
            frame = frame[: rng.randrange(1, len(frame) - 1)]
        if cfg.duplicate and rng.random() < cfg.duplicate:
            frame = frame + frame
        try:
            n = os.write(self.master, frame)
            if n < len(frame):
                self.tx_dropped += 1
        except BlockingIOError:
            # Nobody is reading the slave: a real UART would drop bytes too.
            self.tx_dropped += 1
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise

    def receive(self, now: float) -> None:
        """Read everything the host sent and act on it."""
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if self.cfg.drop_rx_bytes:
            p, rng = self.cfg.drop_rx_bytes, self.rng
            data = bytes(x for x in data if rng.random() >= p)
        if not data:
            return
        if now - self.last_rx > HOST_SILENCE_S:
            if self.host_t0 is None:
                self.host_t0 = now
            self.event("host_frame", "")
            if self.cfg.garbage_at_open:
                junk = bytes(self.rng.randrange(1, 256) for _ in range(self.cfg.garbage_at_open))
                self.send(junk)
        self.last_rx = now
        for msg_type, payload in self.decoder.feed(data):
            if msg_type == P.MSG_FORCE and len(payload) == P.FORCE_STRUCT.size:
                seq, fx, fy, fz, fg, flags, state_echo = P.FORCE_STRUCT.unpack(payload)
                if self.force_frames and seq != (self.force_echo + 1) & 0xFFFFFFFF:
                    gap = (seq - self.force_echo - 1) & 0xFFFFFFFF
                    if gap < 0x80000000:
                        self.force_gaps += gap
                self.force_frames += 1
                self.force_echo = seq
                self.last_force_rx = now
                if ((state_echo - self.latest_answer) & 0xFFFFFFFF) < 0x80000000:
                    self.latest_answer = state_echo
                if self.cfg.sync_ticks > 0:
                    # Due at the tick that sends STATE echo + sync_ticks (now if that has passed).
                    self._sync.append(((state_echo + self.cfg.sync_ticks) & 0xFFFFFFFF, fx * 1e-3,
                                       fy * 1e-3, fz * 1e-3, fg * 1e-3,
                                       bool(flags & P.FORCE_ENABLE)))
                    continue
                self.cmd_force[0] = fx * 1e-3
                self.cmd_force[1] = fy * 1e-3
                self.cmd_force[2] = fz * 1e-3
                self.cmd_gripper = fg * 1e-3
                self.cmd_enable = bool(flags & P.FORCE_ENABLE)
            elif msg_type == P.MSG_CMD:
                try:
                    cmd = P.decode_message(msg_type, payload)
                except P.ProtocolError:
                    continue
                self.command(cmd, now)

    def command(self, cmd: P.Cmd, now: float) -> None:
        """Execute one CMD and send its ACK (and INFO for GET_INFO)."""
        op, arg = cmd.opcode, cmd.arg
        result, value = P.ACK_OK, 0
        if op == P.CMD_ENABLE:
            if not self.homed:
                result, value = P.ACK_REFUSED, P.FAULT_NOT_HOMED
            else:
                self.enabled = True
                self.fault = self.watchdog_tripped = False
                self.last_force_rx = now  # the watchdog period starts now
                self.event("enable")
        elif op == P.CMD_DISABLE:
            self.enabled = False
            self.event("disable")
        elif op == P.CMD_HOME:
            self.homed = True
        elif op == P.CMD_SET_WATCHDOG_MS:
            if 5 <= arg <= 2000:
                self.watchdog_s = arg / 1000.0
                value = arg
            else:
                result = P.ACK_BAD_ARGUMENT
        elif op == P.CMD_SET_MAX_FORCE_MN:
            if arg >= 0:
                self.sw_max_force = min(arg * 1e-3, self.cfg.max_force)
                value = round(self.sw_max_force * 1000)
            else:
                result = P.ACK_BAD_ARGUMENT
        elif op == P.CMD_SET_RATE_HZ:
            if 100 <= arg <= 2000:
                self.rate_hz = arg
                value = arg
            else:
                result = P.ACK_BAD_ARGUMENT
        elif op == P.CMD_GET_INFO:
            pass
        elif op == P.CMD_SAVE_CALIBRATION:
            self.calibrated = True
        elif op == P.CMD_GET_COUNTER:
            counters = {P.COUNTER_FORCE_FRAMES: self.force_frames,
                        P.COUNTER_FORCE_GAPS: self.force_gaps,
                        P.COUNTER_FRAME_ERRORS: self.decoder.errors,
                        P.COUNTER_WATCHDOG_TRIPS: self.watchdog_trips}
            if arg in counters:
                value = counters[arg] & 0x7FFFFFFF
            else:
                result = P.ACK_BAD_ARGUMENT
        elif op == EMU_SET_HAND:
            if not 0 <= arg < len(HANDS) or (HANDS[arg] == "script" and not self.cfg.script):
                result = P.ACK_BAD_ARGUMENT
            elif HANDS[arg] != self.hand_kind:  # the hand already there: nothing to do
                self.hand_kind = HANDS[arg]
                self.hand_t0 = now - self.t0
                self.v = [0.0, 0.0, 0.0]
                self.event("hand", self.hand_kind)
            value = arg
        else:
            result = P.ACK_UNKNOWN_OPCODE
        self.send(P.encode(P.Ack(cmd.token, op, result, value)))
        if op == P.CMD_GET_INFO:
            frame = P.encode_frame(P.MSG_INFO, self.info_payload())
            self.event("get_info")
            if self._info_lost < self.cfg.lose_info:
                # One flipped bit in the CRC: the host must drop it and ask again.
                self._info_lost += 1
                frame = frame[:-2] + bytes((frame[-2] ^ 0x01,)) + frame[-1:]
            self.send(frame)

    def info_payload(self) -> bytes:
        cfg = self.cfg
        _, payload = P.pack_payload(P.Info(
            (P.PROTOCOL_MAJOR, P.PROTOCOL_MINOR), cfg.firmware, cfg.serial, cfg.counts_per_m,
            cfg.gripper_counts_per_rad, cfg.max_force, cfg.max_gripper_force, cfg.max_stiffness,
            cfg.workspace, round(self.watchdog_s * 1000), self.rate_hz))
        # --protocol-version lets tests present another version; bytes 0..1 are the version.
        return bytes(cfg.protocol) + payload[2:]

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
        if self._sync:
            q = (self.seq + 1) & 0xFFFFFFFF  # the STATE this tick sends
            due = None
            while self._sync and ((q - self._sync[0][0]) & 0xFFFFFFFF) < 0x80000000:
                due = self._sync.pop(0)
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

    def host_behind(self, now: float, due: float) -> bool:
        """With --sync-wait-ms: the tick due at `due` [s] waits, because the host has not yet
        answered the STATE sent last (no FORCE echoing it) and the wait is not yet over: a
        synchronous bus whose cycle waits for the host's frame. Every STATE is then answered and
        the FORCE answering STATE n is applied at tick n + sync_ticks exactly.

        Why: this emulator is a Python process; on a loaded machine neither it nor the host keeps
        a crystal's time. A host that falls behind answers only the newest STATE, so the force
        applied at a tick answers an older STATE than usual: the loop delay being measured varies
        (calibration's stability step then measures again, and refuses after 15 tries). The
        watchdog still applies once a wait is over."""
        cfg = self.cfg
        if not (cfg.sync_wait_ms and cfg.sync_ticks and self.enabled and self.force_frames):
            return False
        missing = 0 < ((self.seq - self.latest_answer) & 0xFFFFFFFF) < 0x80000000
        return missing and now - due < cfg.sync_wait_ms * 1e-3

    # ---------------------------------------------------------------------------------- faults
    def faults(self, now: float) -> None:
        """Fire the time-based fault injections (seconds after the first host frame)."""
        cfg = self.cfg
        if self.host_t0 is None:
            return
        t = now - self.host_t0
        if cfg.stall_ms and not self._stalled and t >= cfg.stall_at:
            self._stalled = True
            self.event("stall_begin", str(cfg.stall_ms))
            time.sleep(cfg.stall_ms / 1000.0)  # the whole device freezes
            self.event("stall_end")
        if cfg.stop_replying_at is not None and not self._silent and t >= cfg.stop_replying_at:
            self.event("stop_replying")
            self._silent = True
        if cfg.unplug_at is not None and self._unplugged_at is None and t >= cfg.unplug_at:
            self.event("unplug", self.path)
            self.close_pty()
            self._unplugged_at = now
            if cfg.replug_after is None:
                self.stop = True
        if (self._unplugged_at is not None and self.master < 0 and cfg.replug_after is not None
                and now - self._unplugged_at >= cfg.replug_after):
            path = self.open_pty()
            self.event("replug", path)
            print(f"trocar emulator: replugged at {path}", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------------------------- loop
    def run(self) -> int:
        """Open the pty, print its path, and run until SIGTERM/SIGINT, --duration or unplug."""
        path = self.open_pty()
        print(path, flush=True)
        print(f"trocar emulator: {self.cfg.serial} on {path}"
              + (f" (link {self.cfg.link})" if self.cfg.link else ""), file=sys.stderr, flush=True)
        self.event("start", path)
        parent = os.getppid()
        if self.cfg.fifo:
            # A device keeps its clock on its own processor; on a shared (test) machine this
            # process competes for a CPU and, at normal priority under load, streams at ~600 Hz.
            why = request_fifo(self.cfg.fifo)
            if why:
                print(f"trocar emulator: {why}", file=sys.stderr, flush=True)

        def _stop(signum: int, frame: object) -> None:
            self.stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        next_t = time.monotonic()
        end = None if self.cfg.duration is None else next_t + self.cfg.duration
        ticks = 0
        try:
            while not self.stop:
                now = time.monotonic()
                held = now >= next_t and self.host_behind(now, next_t)
                if now >= next_t and not held:
                    self.faults(now)
                    now = time.monotonic()
                    self.tick(now)
                    ticks += 1
                    next_t += 1.0 / self.rate_hz
                    if now - next_t > 1.0 / self.rate_hz:
                        # Late by more than a period: skip, never catch up with a burst.
                        self.overruns += 1
                        next_t = now + 1.0 / self.rate_hz
                    if ticks % 100 == 0:
                        if end is not None and now >= end:
                            break
                        if self.cfg.exit_with_parent and os.getppid() != parent:
                            break
                wait = next_t - time.monotonic()
                if held:
                    wait = 0.0005  # the FORCE's bytes end it early
                if self.master >= 0:
                    if wait <= 0:
                        wait = 0.0
                    r, _, _ = select.select([self.master], [], [], wait)
                    if r:
                        self.receive(time.monotonic())
                elif wait > 0:
                    time.sleep(wait)
        finally:
            self.event("stop")
            self.close_pty()
            if self.cfg.link:
                try:
                    if os.path.islink(self.cfg.link):
                        os.unlink(self.cfg.link)
                except OSError:
                    pass
            if self._log is not None:
                self._log.close()
        return 0


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


def run_from_args(a: argparse.Namespace) -> int:
    """Entry for `trocar device emulate`."""
    return Emulator(config_from_args(a)).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m haptics.emulator",
                                description="trocar haptic device emulator on a pty")
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        return run_from_args(a)
    except (EmulatorArgError, OSError) as exc:
        return fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
