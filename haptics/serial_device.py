"""Serial host driver: a HapticDevice speaking the trocar protocol through pyserial.

Owns the host side of the link: opening the port (``serial.serial_for_url``, so real ports,
ptys and ``loop://`` all work), the non-blocking handshake (GET_INFO -> version check ->
SET_WATCHDOG_MS -> HOME if needed -> ENABLE), draining the receive buffer to the newest STATE,
counting sequence gaps and bad frames, measuring round trip through the echo fields, the host
STATE watchdog, reconnecting after an unplug, the confirmed shutdown, and the safety chain
(haptics.safety) in front of every FORCE frame. EmulatedDevice (haptics/emulated_device.py) is
the same driver connected to an emulator process it spawns.

Handshake: GET_INFO is resent every HANDSHAKE_RETRY_S until an intact INFO arrives (an ACK can
arrive while its INFO frame is lost to a dropped byte: the CMD retry alone would never ask
again); open() gives up after `handshake_timeout_s` (HANDSHAKE_TIMEOUT_S, 2 s) with one line.
After an unplug or a port error the driver reopens the port every `reconnect_interval_s` and runs
the same handshake; a reopened port that does not finish it within `handshake_timeout_s` is
closed and reopened (a stale pty, a device that came back wrong).

Shutdown: close() sends zero force with the enable flag clear and CMD DISABLE, then keeps
sending both every SHUTDOWN_RESEND_S until the device's ACK of that DISABLE arrives or
SHUTDOWN_CONFIRM_S passes (`shutdown_confirmed` says which). The device watchdog is the last
line when even that fails.

Nothing here raises after open(): every failure becomes a DeviceEvent with a one-line message,
the sample says connected=False, and FORCE frames carry zero force with the enable flag clear.
"""

from __future__ import annotations

import select
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import serial

from haptics import protocol as P
from haptics import safety
from haptics.device import DeviceError, DeviceEvent, DeviceSample, DeviceSpec, HapticDevice
from haptics.link_health import LinkUpTime

_U32 = struct.Struct("<I")
_RTT_RING = 1 << 16  # round-trip samples kept [count]
_TX_RING = 1024  # FORCE send times kept for echo matching [count]
CMD_RETRY_S = 0.25  # resend an unacknowledged CMD after this long [s]
#: Host watchdog on incoming STATE [s]: the 20 ms docs/haptics-protocol.md promises. Measured
#: from the newest frame the host has *drained*, so a host that was itself late sees no loss.
STATE_TIMEOUT_S = 0.02
HANDSHAKE_TIMEOUT_S = 2.0  # open() gives up after this long without INFO + ENABLE's ACK [s]
HANDSHAKE_RETRY_S = 0.1  # during the handshake: resend GET_INFO / unacknowledged CMDs after [s]
SHUTDOWN_CONFIRM_S = 0.3  # close() waits this long at most for DISABLE's ACK [s]
SHUTDOWN_RESEND_S = 0.02  # ... resending zero force + DISABLE this often meanwhile [s]

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
    state_timeout_s: host watchdog on incoming STATE [s]; handshake_timeout_s: deadline of
    the handshake, at open and after each reconnect [s]; max_force: host clamp [N] (default
    and upper bound: the device's INFO max force); max_rate: dF/dt limit [N/s]; ramp_s: soft-start
    ramp [s]; reconnect_interval_s: how often to retry an unplugged port [s].
    """

    def __init__(self, url: str, *, baudrate: int = 1_000_000, watchdog_ms: int = 50,
                 state_timeout_s: float = STATE_TIMEOUT_S,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
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
        self.disconnects = 0  # port errors (unplug) [count]
        self.tx_partial = 0  # FORCE frames the OS did not take whole
        self.uptime = LinkUpTime()  # running/not running transitions, time without a device
        self.shutdown_confirmed: bool | None = None  # close(): DISABLE acknowledged (None: not yet)
        self._running_at_close = False
        # FORCE frames may also be sent by a keeper thread (keep_alive); reentrant because
        # haptics.safety's signal handlers send from the main thread, maybe mid-send.
        self._tx_lock = threading.RLock()
        self._t_last_tx = 0.0  # last FORCE frame sent [s, perf_counter]
        self._t_loop_force = 0.0  # last write_force from the loop [s, perf_counter]
        self._keeper_zeroed = False  # the keeper zeroed the output: soft start when the loop is back
        self.keeper_frames = 0  # FORCE frames the keeper sent [count]
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
        self._t_handshake = 0.0  # when the port was (re)opened [s, monotonic]
        self._t_info_asked = 0.0  # when GET_INFO was last sent [s, monotonic]
        self._fault_reported = False
        self._opening = False  # inside open(): its own deadline and message apply
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
        self._opening = True
        try:
            self._handshake()
        finally:
            self._opening = False
        self.uptime.update(True)
        safety.register(self)

    def _handshake(self) -> None:
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

    def close(self) -> None:
        """Zero force and disable the device, confirmed by its ACK or retried until
        SHUTDOWN_CONFIRM_S (see the module docstring), then close the port. Idempotent."""
        if self.phase != PHASE_CLOSED:
            self._running_at_close = self.phase == PHASE_RUNNING
        if self._ser is not None and self.phase not in (PHASE_INCOMPATIBLE, PHASE_CLOSED):
            self.shutdown_confirmed = self._confirmed_disable()
        else:
            self.emergency_zero()
        self._close_port()
        self.phase = PHASE_CLOSED
        safety.unregister(self)

    def emergency_zero(self) -> int:
        """Send zero force with enable clear, then CMD DISABLE, once (signal handlers and exit
        hooks call this: it never waits). Returns DISABLE's token (-1: nothing sent). Never
        raises."""
        self.safety.reset()
        self._keeper_zeroed = True  # a keeper thread, if any, may only send zero from now on
        if self._ser is None:
            return -1
        try:
            self._send_force(0.0, 0.0, 0.0, 0.0, 0)
            return self._send_cmd(P.CMD_DISABLE, 0)
        except Exception:  # noqa: BLE001 - exit path
            return -1

    def _confirmed_disable(self) -> bool:
        """Zero + DISABLE, resent every SHUTDOWN_RESEND_S until DISABLE's ACK (True) or
        SHUTDOWN_CONFIRM_S (False). Never raises."""
        token = self.emergency_zero()
        t_end = time.monotonic() + SHUTDOWN_CONFIRM_S
        t_resend = time.monotonic() + SHUTDOWN_RESEND_S
        while token >= 0 and self._ser is not None:
            ack = self.acks.get(P.CMD_DISABLE)
            if ack is not None and ack.token == token and ack.result == P.ACK_OK:
                return True
            now = time.monotonic()
            if now >= t_end:
                break
            if now >= t_resend:
                t_resend = now + SHUTDOWN_RESEND_S
                try:
                    self._send_force(0.0, 0.0, 0.0, 0.0, 0)
                    if self._ser is not None:
                        self._send(P.encode(P.Cmd(token, P.CMD_DISABLE, 0)))
                except Exception:  # noqa: BLE001 - exit path
                    break
            self.wait(0.002)
        self._event("shutdown_unconfirmed", f"{self.url}: DISABLE not acknowledged within "
                    f"{SHUTDOWN_CONFIRM_S * 1000:.0f} ms; the device watchdog must stop the force")
        return False

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
            if self.uptime.up:
                self.uptime.update(False)
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
        running = self.phase == PHASE_RUNNING
        if running != self.uptime.up:
            self.uptime.update(running)

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
        self._t_loop_force = time.perf_counter()
        if self._keeper_zeroed:
            self._keeper_zeroed = False
            self.safety.reset()
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

    def link_stats(self) -> dict:
        """Link health (keys in haptics.link_health). A bare driver applies no calibration
        profile: calibrated is False (CalibratedDevice says whether its profile holds)."""
        d = self.decoder
        up = self.uptime
        return {"frames_ok": self.states, "frames_lost": self.frames_lost,
                "crc_errors": d.crc_errors,
                "framing_errors": d.cobs_errors + d.short_frames + d.oversize,
                "disconnects": up.downs, "reconnects": up.reconnects,
                "time_without_device_s": round(up.down_s(), 4), "ever_connected": up.ever_up,
                "connected": (self.phase == PHASE_RUNNING if self.phase != PHASE_CLOSED
                              else self._running_at_close), "calibrated": False,
                "calibration_note": "no calibration profile applied (bare driver)",
                "shutdown_confirmed": self.shutdown_confirmed}

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
        self._ask_info()

    def _ask_info(self) -> None:
        self._t_info_asked = time.monotonic()
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

    def _force_frame(self, fx: float, fy: float, fz: float, fg: float, flags: int) -> bytes:
        """The next FORCE frame (new seq, echo, round-trip bookkeeping). Call holding _tx_lock."""
        seq = self._force_seq = (self._force_seq + 1) & 0xFFFFFFFF
        echo = self._last_seq or 0
        payload = P.FORCE_STRUCT.pack(seq, round(fx * 1000), round(fy * 1000), round(fz * 1000),
                                      round(fg * 1000), flags, echo)
        i = seq & (_TX_RING - 1)
        self._tx_seq[i] = seq
        self._t_last_tx = self._tx_time[i] = time.perf_counter()
        self.last_force_sent = (fx, fy, fz)
        self.last_flags_sent = flags
        return P.encode_frame(P.MSG_FORCE, payload)

    def _send_force(self, fx: float, fy: float, fz: float, fg: float, flags: int) -> None:
        if self._ser is None:
            return
        with self._tx_lock:
            self._send(self._force_frame(fx, fy, fz, fg, flags))

    def keep_alive(self, silence_s: float, hold_s: float) -> bool:
        """For a keeper thread (haptics.force_keeper): when no FORCE frame went out for
        `silence_s` [s], send one, so that a loop stuck in a long tick does not trip the device
        watchdog. It repeats the last force while the loop has been silent for less than
        `hold_s` [s], then sends zero force with the enable flag clear (and the soft start runs
        again when the loop is back). Returns whether it sent. Never raises; never changes the
        link's state (a failed write is the loop's to notice)."""
        with self._tx_lock:
            ser = self._ser
            now = time.perf_counter()
            if ser is None or self.phase != PHASE_RUNNING or now - self._t_last_tx < silence_s:
                return False
            if now - self._t_loop_force < hold_s and not self._keeper_zeroed:
                f, g, flags = self.last_force_sent, self.safety.gripper_out, self.last_flags_sent
            else:
                f, g, flags = (0.0, 0.0, 0.0), 0.0, 0
                self._keeper_zeroed = True
            try:
                ser.write(self._force_frame(f[0], f[1], f[2], g, flags))
            except Exception:  # noqa: BLE001 - the loop's next write reports a dead port
                return False
            self.keeper_frames += 1
            return True

    def _send_cmd(self, opcode: int, arg: int) -> int:
        self._token = (self._token + 1) & 0xFFFF
        self._pending[self._token] = (opcode, arg, time.monotonic())
        if self._ser is not None:
            with self._tx_lock:  # one frame per write, never interleaved with a keeper's
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
        if phase == PHASE_HANDSHAKE:
            if t - self._t_handshake > self.handshake_timeout_s and self.auto_reconnect \
                    and self.configure and not self._opening:
                # A reopened port that never finishes the handshake: start over from the port.
                # (open() has its own deadline and message; it never gets here with time left.)
                self._disconnected(f"no INFO within {self.handshake_timeout_s:g} s of reopening")
                return
            if t - self._t_info_asked > HANDSHAKE_RETRY_S:
                for token, (op, _, _) in list(self._pending.items()):
                    if op == P.CMD_GET_INFO:
                        del self._pending[token]
                self._ask_info()
        if not self._pending:
            return
        # Configuration commands are resent faster: the open waits on them.
        retry_s = CMD_RETRY_S if phase == PHASE_RUNNING else HANDSHAKE_RETRY_S
        for token, (op, arg, t_sent) in list(self._pending.items()):
            if t - t_sent > retry_s:
                self._pending[token] = (op, arg, t)
                self._send(P.encode(P.Cmd(token, op, arg)))


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
