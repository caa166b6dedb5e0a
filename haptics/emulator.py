"""Device emulator: a 3-DOF force device with a gripper and two buttons behind a real pty.

Owns the device side of the protocol as firmware would implement it, on top of the simulated
device (haptics.emulator_physics.DevicePhysics: watchdog, motor output, latency, hand models and
mechanics, the STATE of each tick): the pty, a device clock streaming STATE at the stream rate,
FORCE and CMD handling with their ACKs and INFO, the emulator-only hand command (EMU_SET_HAND) and
fault injection (for tests), and the command line. Runs as its own process: ``trocar device
emulate`` or ``python -m haptics.emulator``; prints the pty slave path as the first line of stdout.

An optional event log (``--event-log FILE``) records, with time.monotonic() [s] stamps, what a
scope on the motor would show (output_zero, watchdog_trip, unplug, ...), so tests can check the
device side of a fault from outside the process. Its settings and command line are
`haptics.emulator_config`.

The hand can be changed within a session with the emulator-only CMD EMU_SET_HAND, so one
`calibrate --auto` session can use every fixture.
"""

from __future__ import annotations

import argparse
import errno
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
from haptics.emulator_physics import DevicePhysics
from haptics.sched import request_fifo

# Emulator-only command (a vendor opcode outside the protocol's 1..9): change the hand model
# (the fixture a calibration step needs). arg: an index into HANDS. A real device answers ACK
# result 1 (unknown opcode), which is how the wizard knows a person must change the fixture.
EMU_SET_HAND = 200
HOST_SILENCE_S = 0.2  # a frame after this much silence counts as a host (re)connecting [s]


class Emulator(DevicePhysics):
    """The device on its pty. `run()` owns the loop; the per-tick device state and physics are
    DevicePhysics's."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.rng = random.Random(cfg.seed)
        self.master = -1
        self.slave = -1
        self.path = ""
        self.decoder = P.FrameDecoder()
        self.stop = False
        self._log = open(cfg.event_log, "a", buffering=1) if cfg.event_log else None  # noqa: SIM115
        self.latest_answer = 0  # newest STATE seq a FORCE has answered (its state_echo)
        self.last_rx = -1e9
        self.host_t0: float | None = None
        # counters
        self.force_frames = 0
        self.force_gaps = 0
        self.overruns = 0
        self.tx_dropped = 0
        self._stalled = False
        self._info_lost = 0  # INFO frames corrupted since the pty opened (lose_info)
        self._silent = False
        self._unplugged_at: float | None = None
        super().__init__(cfg)  # the device state; its clock (t0) starts last

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
                    self.due_forces.append(((state_echo + self.cfg.sync_ticks) & 0xFFFFFFFF, fx * 1e-3,
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
