"""Serial link, host side: the trocar protocol's connection state machine over pyserial.

Owns the link under haptics.serial_device.SerialDevice (its base class): opening the port
(``serial.serial_for_url``, so real ports, ptys and ``loop://`` all work), the handshake phases
(GET_INFO -> version check -> SET_WATCHDOG_MS -> HOME if needed -> ENABLE), CMD tokens, their ACKs
and retries, draining the receive buffer to the newest STATE, counting sequence gaps and bad
frames, FORCE framing and the round trip measured through the echo fields, the host STATE
watchdog, device faults, and reconnecting after an unplug. Every change of link state resets the
safety chain (haptics.safety), so force goes to zero on every error path.

Handshake: GET_INFO is resent every HANDSHAKE_RETRY_S until an intact INFO arrives (an ACK can
arrive while its INFO frame is lost to a dropped byte: the CMD retry alone would never ask
again). After an unplug or a port error the link reopens the port every `reconnect_interval_s`
and runs the same handshake; a reopened port that does not finish it within
`handshake_timeout_s` is closed and reopened (a stale pty, a device that came back wrong).

Only opening the port for open() or probe() raises (DeviceError, one line); after that every
failure becomes a DeviceEvent with a one-line message.
"""

from __future__ import annotations

import select
import struct
import threading
import time
from collections import deque

import numpy as np
import serial

from haptics import protocol as P
from haptics import safety
from haptics.device import DeviceError, DeviceEvent, DeviceSpec
from haptics.link_health import LinkUpTime

_U32 = struct.Struct("<I")
RTT_RING = 1 << 16  # round-trip samples kept [count]
_TX_RING = 1024  # FORCE send times kept for echo matching [count]
CMD_RETRY_S = 0.25  # resend an unacknowledged CMD after this long [s]
#: Host watchdog on incoming STATE [s]: the 20 ms docs/haptics-protocol.md promises. Measured
#: from the newest frame the host has *drained*, so a host that was itself late sees no loss.
STATE_TIMEOUT_S = 0.02
HANDSHAKE_TIMEOUT_S = 2.0  # open() gives up after this long without INFO + ENABLE's ACK [s]
HANDSHAKE_RETRY_S = 0.1  # during the handshake: resend GET_INFO / unacknowledged CMDs after [s]

PHASE_CLOSED = "closed"
PHASE_HANDSHAKE = "handshake"  # port open, waiting for INFO
PHASE_CONFIGURING = "configuring"  # INFO ok, waiting for ENABLE's ACK
PHASE_RUNNING = "running"
PHASE_LINK_LOST = "link lost"  # port open, STATE frames stopped
PHASE_DISCONNECTED = "disconnected"  # port gone; reconnecting if enabled
PHASE_INCOMPATIBLE = "incompatible"  # wrong protocol major; never retried


class SerialLink:
    """The host side of a trocar-protocol link on a serial port (or anything serial_for_url
    opens); SerialDevice puts the HapticDevice API on top.

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
        # FORCE frames may also be sent by a keeper thread (keep_alive); reentrant because
        # haptics.safety's signal handlers send from the main thread, maybe mid-send.
        self._tx_lock = threading.RLock()
        self._t_last_tx = 0.0  # last FORCE frame sent [s, perf_counter]
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
        self.rtt_us = np.zeros(RTT_RING)  # ring of round trips [us]
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

    # -------------------------------------------------------------------------------- link
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

    def command(self, opcode: int, arg: int = 0) -> int:
        """Send a CMD (acknowledged asynchronously, see `acks`); returns its token."""
        return self._send_cmd(opcode, arg)

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
                    self.rtt_us[self.rtt_count & (RTT_RING - 1)] = (now - self._tx_time[i]) * 1e6
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
