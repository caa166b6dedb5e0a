"""Serial host driver: a HapticDevice speaking the trocar protocol through pyserial.

Owns the host side of the link: opening the port (``serial.serial_for_url``, so real ports,
ptys and ``loop://`` all work), the non-blocking handshake (GET_INFO -> version check ->
SET_WATCHDOG_MS -> HOME if needed -> ENABLE), draining the receive buffer to the newest STATE,
counting sequence gaps and bad frames, measuring round trip through the echo fields, the host
STATE watchdog, reconnecting after an unplug, and the safety chain (haptics.safety) in front of
every FORCE frame. EmulatedDevice is the same driver connected to an emulator process it spawns.

Nothing here raises after open(): every failure becomes a DeviceEvent with a one-line message,
the sample says connected=False, and FORCE frames carry zero force with the enable flag clear.
"""

from __future__ import annotations

import select
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import serial

from haptics import protocol as P
from haptics import safety
from haptics.device import DeviceError, DeviceEvent, DeviceSample, DeviceSpec, HapticDevice

_U32 = struct.Struct("<I")
_RTT_RING = 1 << 16  # round-trip samples kept [count]
_TX_RING = 1024  # FORCE send times kept for echo matching [count]
CMD_RETRY_S = 0.25  # resend an unacknowledged CMD after this long [s]

PHASE_CLOSED = "closed"
PHASE_HANDSHAKE = "handshake"  # port open, waiting for INFO
PHASE_CONFIGURING = "configuring"  # INFO ok, waiting for ENABLE's ACK
PHASE_RUNNING = "running"
PHASE_LINK_LOST = "link lost"  # port open, STATE frames stopped
PHASE_DISCONNECTED = "disconnected"  # port gone; reconnecting if enabled
PHASE_INCOMPATIBLE = "incompatible"  # wrong protocol major; never retried


class SerialDevice(HapticDevice):
    """A trocar-protocol device on a serial port (or anything serial_for_url opens).

    url: port path or pyserial URL; watchdog_ms: device watchdog the host asks for [ms];
    state_timeout_s: host watchdog on incoming STATE [s]; max_force: host clamp [N] (default
    and upper bound: the device's INFO max force); max_rate: dF/dt limit [N/s]; ramp_s: soft-start
    ramp [s]; reconnect_interval_s: how often to retry an unplugged port [s].
    """

    def __init__(self, url: str, *, baudrate: int = 1_000_000, watchdog_ms: int = 50,
                 state_timeout_s: float = 0.02, handshake_timeout_s: float = 2.0,
                 max_force: float | None = None, max_rate: float = 500.0, ramp_s: float = 2.0,
                 auto_reconnect: bool = True, reconnect_interval_s: float = 0.2,
                 auto_reenable: bool = True) -> None:
        self.url = url
        self.baudrate = baudrate
        self.watchdog_ms = watchdog_ms
        self.state_timeout_s = state_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.max_force = max_force
        self.auto_reconnect = auto_reconnect
        self.reconnect_interval_s = reconnect_interval_s
        self.auto_reenable = auto_reenable
        self.safety = safety.ForceSafety(0.0, max_rate=max_rate, ramp_s=ramp_s)
        self.events: deque[DeviceEvent] = deque(maxlen=1000)
        self.last_error: str | None = None
        self.phase = PHASE_CLOSED
        self.info: P.Info | None = None
        self._spec: DeviceSpec | None = None
        self._ser: serial.SerialBase | None = None
        self.decoder = P.FrameDecoder()
        # counters (cumulative over reconnects)
        self.states = 0  # STATE frames received
        self.frames_lost = 0  # STATE sequence gaps
        self.duplicates = 0  # repeated or out-of-order STATE
        self.bad_messages = 0  # CRC-valid frames that are not valid messages
        self.device_faults = 0
        self.disconnects = 0
        self.tx_partial = 0  # FORCE frames the OS did not take whole
        # newest STATE
        self._state_payload = b""
        self._state_t = 0.0
        self._state_new = False
        self._last_seq: int | None = None
        self._last_state_t = 0.0
        self.status = 0
        # FORCE side
        self._force_seq = 0
        self._tx_time = [0.0] * _TX_RING
        self._tx_seq = [-1] * _TX_RING
        self._last_echo = -1
        self.rtt_us = np.zeros(_RTT_RING)  # ring of round trips [us]
        self.rtt_count = 0
        self.last_force_sent = (0.0, 0.0, 0.0)  # [N]
        self.last_flags_sent = 0
        # commands
        self._token = 0
        self._pending: dict[int, tuple[int, int, float]] = {}  # token -> (opcode, arg, t_sent)
        self.acks: dict[int, P.Ack] = {}  # newest ACK per opcode
        self._next_retry = 0.0
        self._t_handshake = 0.0
        self._fault_reported = False
        self.configure = True  # False: stop after INFO (probing must not enable a device)

    # -------------------------------------------------------------------------------- public
    @property
    def spec(self) -> DeviceSpec:
        if self._spec is None:
            raise DeviceError(f"{self.url}: device not open")
        return self._spec

    @property
    def connected(self) -> bool:
        """STATE frames are arriving (the link is healthy)."""
        return self.phase in (PHASE_RUNNING, PHASE_CONFIGURING)

    def fileno(self) -> int:
        """The port's file descriptor (for select), or -1 while the port is closed."""
        try:
            return self._ser.fileno() if self._ser is not None else -1
        except Exception:  # noqa: BLE001 - loop:// and friends have no fd
            return -1

    def open(self) -> None:
        """Open the port and run the handshake; DeviceError (one line) if that fails."""
        self._open_port(raise_errors=True)
        deadline = time.monotonic() + self.handshake_timeout_s
        while self.phase != PHASE_RUNNING:
            self.poll()
            if self.phase == PHASE_INCOMPATIBLE:
                self._close_port()
                raise DeviceError(self.last_error or "incompatible device")
            if self.phase == PHASE_DISCONNECTED:
                self._close_port()
                raise DeviceError(self.last_error or f"{self.url}: disconnected")
            if time.monotonic() > deadline:
                what = ("no INFO" if self.info is None else "ENABLE not acknowledged")
                self._close_port()
                self.phase = PHASE_CLOSED
                raise DeviceError(
                    f"{self.url}: no answer from a trocar device within "
                    f"{self.handshake_timeout_s:g} s ({what}; check the port and that the "
                    f"firmware speaks trocar protocol {P.PROTOCOL_MAJOR}.x)")
            self.wait(0.002)
        safety.register(self)

    def close(self) -> None:
        """Zero force, disable the device, close the port. Idempotent."""
        self.emergency_zero()
        self._close_port()
        self.phase = PHASE_CLOSED
        safety.unregister(self)

    def emergency_zero(self) -> None:
        """Send zero force with enable clear, then CMD DISABLE. Never raises."""
        self.safety.reset()
        if self._ser is None:
            return
        try:
            self._send_force(0.0, 0.0, 0.0, 0.0, 0)
            self._send_cmd(P.CMD_DISABLE, 0)
        except Exception:  # noqa: BLE001 - exit path
            pass

    def wait(self, timeout_s: float) -> None:
        """Sleep up to timeout_s [s], waking early when bytes arrive (then poll())."""
        fd = self.fileno()
        if fd < 0:
            time.sleep(timeout_s)
            return
        try:
            r, _, _ = select.select([fd], [], [], timeout_s)
        except (OSError, ValueError):
            r = []
        if r:
            self.poll()

    def poll(self) -> None:
        """Drain received bytes and update link state; cheap, never blocks, never raises."""
        now = time.perf_counter()
        ser = self._ser
        if ser is None:
            if (self.phase == PHASE_DISCONNECTED and self.auto_reconnect
                    and time.monotonic() >= self._next_retry):
                self._next_retry = time.monotonic() + self.reconnect_interval_s
                self._open_port(raise_errors=False)
            return
        try:
            while True:
                data = ser.read(4096)
                if data:
                    for msg_type, payload in self.decoder.feed(data):
                        self._handle(msg_type, payload, now)
                if len(data) < 4096:
                    break
        except (serial.SerialException, OSError) as exc:
            self._disconnected(str(exc))
            return
        self._check(now)

    def read(self) -> DeviceSample:
        """The newest sample; drains the port first. Never blocks, never raises."""
        self.poll()
        s = DeviceSample(connected=self.connected, error=self.last_error)
        if self._state_payload and self._spec is not None:
            v = P.STATE_STRUCT.unpack(self._state_payload)
            spec = self._spec
            cpm = spec.counts_per_m
            s.t = self._state_t
            s.seq = v[0]
            s.t_device_us = v[1]
            s.position_counts = np.array(v[2:5], dtype=np.int64)
            s.position = np.array((v[2] / cpm[0], v[3] / cpm[1], v[4] / cpm[2]))
            s.gripper = v[5] / spec.gripper_counts_per_rad
            s.buttons = v[6]
            s.status = v[7]
            s.force_applied = np.array((v[8] * 1e-3, v[9] * 1e-3, v[10] * 1e-3))
        s.fresh = self._state_new
        self._state_new = False
        return s

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        """Send this tick's FORCE through the safety chain; zero unless the link is running."""
        if self._ser is None or self.phase == PHASE_HANDSHAKE:
            return
        if self.phase == PHASE_RUNNING:
            out = self.safety.apply(float(force[0]), float(force[1]), float(force[2]),
                                    float(gripper), time.perf_counter())
            self._send_force(out[0], out[1], out[2], self.safety.gripper_out, P.FORCE_ENABLE)
        else:
            # Link lost or device not enabled: keep the heartbeat, with zero force.
            self._send_force(0.0, 0.0, 0.0, 0.0, 0)

    def command(self, opcode: int, arg: int = 0) -> int:
        """Send a CMD (acknowledged asynchronously, see `acks`); returns its token."""
        return self._send_cmd(opcode, arg)

    def rtt_percentiles(self, qs: Sequence[float] = (50, 99, 100)) -> list[float]:
        """Round-trip percentiles [us] over the kept samples (NaN if none)."""
        n = min(self.rtt_count, _RTT_RING)
        if n == 0:
            return [float("nan")] * len(qs)
        return [float(x) for x in np.percentile(self.rtt_us[:n], qs)]

    def stats(self) -> dict:
        """Counters for monitors and benchmarks."""
        p50, p99, pmax = self.rtt_percentiles()
        d = self.decoder
        return {"phase": self.phase, "states": self.states, "frames_lost": self.frames_lost,
                "duplicates": self.duplicates, "crc_errors": d.crc_errors,
                "framing_errors": d.cobs_errors + d.short_frames + d.oversize,
                "bad_messages": self.bad_messages, "device_faults": self.device_faults,
                "disconnects": self.disconnects, "rtt_p50_us": p50, "rtt_p99_us": p99,
                "rtt_max_us": pmax}

    # ------------------------------------------------------------------------------- internals
    def _event(self, kind: str, message: str, error: bool = True) -> None:
        self.events.append(DeviceEvent(time.monotonic(), kind, message))
        if error:
            self.last_error = message

    def _open_port(self, raise_errors: bool) -> None:
        try:
            # timeout=0: read() returns what is there; write_timeout=0: never block the tick.
            self._ser = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0,
                                              write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            msg = f"cannot open {self.url}: {exc}"
            if raise_errors:
                raise DeviceError(msg) from None
            return
        self.decoder.reset(resync=True)
        self.phase = PHASE_HANDSHAKE
        self._pending.clear()
        self._last_seq = None
        self._state_payload = b""
        self._t_handshake = time.monotonic()
        self.safety.reset()
        if not raise_errors:
            self._event("reconnect", f"{self.url}: port reopened, handshaking", error=False)
        self._send_cmd(P.CMD_GET_INFO, 0)

    def _close_port(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # noqa: BLE001 - closing a vanished port may fail; it is gone
                pass

    def _disconnected(self, why: str) -> None:
        self._close_port()
        self.safety.reset()
        self.phase = PHASE_DISCONNECTED
        self.disconnects += 1
        self._next_retry = time.monotonic() + self.reconnect_interval_s
        self._event("disconnect", f"device {self.url} disconnected: {why}")

    def _send(self, frame: bytes) -> None:
        try:
            n = self._ser.write(frame)
        except (serial.SerialException, OSError) as exc:
            self._disconnected(str(exc))
            return
        if n is not None and n < len(frame):
            self.tx_partial += 1  # receiver drops the truncated frame at the next delimiter

    def _send_force(self, fx: float, fy: float, fz: float, fg: float, flags: int) -> None:
        if self._ser is None:
            return
        seq = self._force_seq = (self._force_seq + 1) & 0xFFFFFFFF
        echo = self._last_seq or 0
        payload = P.FORCE_STRUCT.pack(seq, round(fx * 1000), round(fy * 1000), round(fz * 1000),
                                      round(fg * 1000), flags, echo)
        i = seq & (_TX_RING - 1)
        self._tx_seq[i] = seq
        self._tx_time[i] = time.perf_counter()
        self.last_force_sent = (fx, fy, fz)
        self.last_flags_sent = flags
        self._send(P.encode_frame(P.MSG_FORCE, payload))

    def _send_cmd(self, opcode: int, arg: int) -> int:
        self._token = (self._token + 1) & 0xFFFF
        self._pending[self._token] = (opcode, arg, time.monotonic())
        if self._ser is not None:
            self._send(P.encode(P.Cmd(self._token, opcode, arg)))
        return self._token

    def _handle(self, msg_type: int, payload: bytes, now: float) -> None:
        if msg_type == P.MSG_STATE and len(payload) == P.STATE_STRUCT.size:
            seq = _U32.unpack_from(payload)[0]
            last = self._last_seq
            if last is not None:
                gap = (seq - last - 1) & 0xFFFFFFFF
                if gap >= 0x80000000:  # seq <= last: a duplicate or a stale frame
                    self.duplicates += 1
                    return
                self.frames_lost += gap
            self._last_seq = seq
            self.states += 1
            self._state_payload = payload
            self._state_t = now
            self._state_new = True
            self._last_state_t = now
            status = self.status = payload[P.STATE_STATUS_OFFSET]
            if status & P.STATUS_FAULT and self.phase == PHASE_RUNNING:
                self._on_device_fault(status)
            echo = _U32.unpack_from(payload, P.STATE_ECHO_OFFSET)[0]
            if echo != self._last_echo:
                self._last_echo = echo
                i = echo & (_TX_RING - 1)
                if self._tx_seq[i] == echo:
                    self.rtt_us[self.rtt_count & (_RTT_RING - 1)] = (now - self._tx_time[i]) * 1e6
                    self.rtt_count += 1
            return
        try:
            msg = P.decode_message(msg_type, payload)
        except P.ProtocolError as exc:
            if msg_type == P.MSG_INFO:
                self.phase = PHASE_INCOMPATIBLE
                self._event("incompatible", f"{self.url}: {exc}; refusing the device")
                self._close_port()
            else:
                self.bad_messages += 1
            return
        if isinstance(msg, P.Ack):
            self._on_ack(msg)
        elif isinstance(msg, P.Info):
            self._on_info(msg)
        elif isinstance(msg, P.Fault):
            self.device_faults += 1
            self._fault_reported = True
            self._event("device_fault", f"{self.url}: {P.fault_message(msg.code, msg.detail)}")
        else:
            self.bad_messages += 1  # a host never receives FORCE or CMD

    def _on_device_fault(self, status: int) -> None:
        """The device latched a fault: zero now; re-enable only after a watchdog trip, which the
        host itself caused and has cured by talking again."""
        self.safety.reset()
        self.phase = PHASE_CONFIGURING
        if not self._fault_reported:
            self._event("device_fault", f"{self.url}: device reports a latched fault "
                        f"(status 0x{status:02x}); force zeroed")
        self._fault_reported = True
        if self.auto_reenable and status & P.STATUS_WATCHDOG:
            self._send_cmd(P.CMD_ENABLE, 0)

    def _on_info(self, info: P.Info) -> None:
        if self.phase != PHASE_HANDSHAKE or not self.configure:
            self.info = info
            return
        self.info = info
        fmax = info.max_force_n if self.max_force is None else min(self.max_force,
                                                                   info.max_force_n)
        self.safety.max_force = fmax
        self.safety.max_gripper = info.max_gripper_force_n
        self.safety.start_threshold = 0.05 * fmax
        self._spec = DeviceSpec(
            name=f"trocar:{info.serial}", serial=info.serial, protocol=info.protocol,
            firmware=info.firmware, max_force=fmax, max_gripper_force=info.max_gripper_force_n,
            max_stiffness=info.max_stiffness, workspace=info.workspace_m,
            counts_per_m=info.counts_per_m, gripper_counts_per_rad=info.gripper_counts_per_rad,
            rate_hz=info.rate_hz, watchdog_ms=self.watchdog_ms)
        self.phase = PHASE_CONFIGURING
        self._last_state_t = time.perf_counter()
        self._send_cmd(P.CMD_SET_WATCHDOG_MS, self.watchdog_ms)
        if self.status and not self.status & P.STATUS_HOMED:
            self._send_cmd(P.CMD_HOME, 0)
        self._send_cmd(P.CMD_ENABLE, 0)

    def _on_ack(self, ack: P.Ack) -> None:
        pending = self._pending.pop(ack.token, None)
        self.acks[ack.opcode] = ack
        if pending is None:
            return
        name = P.CMD_NAMES.get(ack.opcode, str(ack.opcode))
        if ack.result != P.ACK_OK:
            why = P.ACK_NAMES.get(ack.result, str(ack.result))
            if ack.opcode == P.CMD_ENABLE and ack.value == P.FAULT_NOT_HOMED:
                why = "device is not homed (send HOME first)"
            self._event("cmd_failed", f"{self.url}: {name}({pending[1]}) failed: {why}")
            return
        if ack.opcode == P.CMD_ENABLE and self.phase == PHASE_CONFIGURING:
            self.phase = PHASE_RUNNING
            self._fault_reported = False
            self.safety.reset()
            self._last_state_t = time.perf_counter()

    def _check(self, now: float) -> None:
        """Watchdogs, device faults and command retries, after draining."""
        phase = self.phase
        if phase == PHASE_RUNNING or phase == PHASE_CONFIGURING:
            if now - self._last_state_t > self.state_timeout_s:
                self.phase = PHASE_LINK_LOST
                self.safety.reset()
                ms = (now - self._last_state_t) * 1000
                self._event("link_lost", f"{self.url}: no STATE frame for {ms:.0f} ms "
                            f"(limit {self.state_timeout_s * 1000:.0f} ms); force output stopped")
                return
        elif phase == PHASE_LINK_LOST:
            if now - self._last_state_t <= self.state_timeout_s:
                self._event("link_restored", f"{self.url}: STATE frames again; soft start",
                            error=False)
                self.phase = PHASE_CONFIGURING
                self._send_cmd(P.CMD_ENABLE, 0)
            return
        t = time.monotonic()
        for token, (op, arg, t_sent) in list(self._pending.items()):
            if t - t_sent > CMD_RETRY_S:
                self._pending[token] = (op, arg, t)
                self._send(P.encode(P.Cmd(token, op, arg)))


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


def probe(url: str, timeout_s: float = 0.5) -> P.Info:
    """Handshake only: open `url`, ask for INFO, close. DeviceError if there is no answer."""
    dev = SerialDevice(url, handshake_timeout_s=timeout_s, auto_reconnect=False)
    dev.configure = False
    dev._open_port(raise_errors=True)
    try:
        deadline = time.monotonic() + timeout_s
        while dev.info is None:
            dev.poll()
            if dev.phase in (PHASE_INCOMPATIBLE, PHASE_DISCONNECTED):
                raise DeviceError(dev.last_error or f"{url}: disconnected")
            if time.monotonic() > deadline:
                raise DeviceError(f"{url}: no INFO within {timeout_s:g} s")
            dev.wait(0.005)
        return dev.info
    finally:
        dev._close_port()
