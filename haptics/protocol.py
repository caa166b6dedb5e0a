"""The trocar haptic wire protocol, version 1.0: framing, message layouts, constants.

This module owns the bytes on the wire between a host and a force-feedback device. The normative
description, with a worked hex example, is docs/haptics-protocol.md; this file and the doc must
agree (tests decode the doc's example).

Framing: every frame is ``COBS(type u8 | payload | CRC-16/CCITT-FALSE u16 LE)`` followed by one
0x00 delimiter. COBS guarantees the encoded body never contains 0x00, so a receiver that sees
garbage resynchronises at the next 0x00; the CRC (poly 0x1021, init 0xFFFF, as computed by
``binascii.crc_hqx(data, 0xFFFF)``) covers type and payload. All integers are little-endian;
floats are IEEE-754 binary32 little-endian.

Units on the wire: positions in raw encoder counts, forces in millinewtons [mN] (int32), times in
microseconds [us] (uint32, wrapping), rates in Hz, watchdog periods in milliseconds [ms].
"""

from __future__ import annotations

import struct
from binascii import crc_hqx
from typing import NamedTuple

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0

# Message type byte (first decoded byte of every frame).
MSG_STATE = 0x01  # device -> host, streamed at the stream rate (1 kHz)
MSG_FORCE = 0x02  # host -> device, every host tick; doubles as heartbeat
MSG_CMD = 0x03  # host -> device
MSG_ACK = 0x04  # device -> host, one per CMD
MSG_INFO = 0x05  # device -> host, after CMD GET_INFO
MSG_FAULT = 0x06  # device -> host, when a fault is latched

MSG_NAMES = {
    MSG_STATE: "STATE",
    MSG_FORCE: "FORCE",
    MSG_CMD: "CMD",
    MSG_ACK: "ACK",
    MSG_INFO: "INFO",
    MSG_FAULT: "FAULT",
}

# STATE.status bits.
STATUS_ENABLED = 1 << 0
STATUS_HOMED = 1 << 1
STATUS_FAULT = 1 << 2
STATUS_WATCHDOG = 1 << 3
STATUS_CLAMPED = 1 << 4
STATUS_CALIBRATED = 1 << 5

# FORCE.flags bits.
FORCE_ENABLE = 1 << 0

# CMD opcodes.
CMD_ENABLE = 1
CMD_DISABLE = 2
CMD_HOME = 3
CMD_SET_WATCHDOG_MS = 4
CMD_SET_MAX_FORCE_MN = 5
CMD_SET_RATE_HZ = 6
CMD_GET_INFO = 7
CMD_SAVE_CALIBRATION = 8
CMD_GET_COUNTER = 9

CMD_NAMES = {
    CMD_ENABLE: "ENABLE",
    CMD_DISABLE: "DISABLE",
    CMD_HOME: "HOME",
    CMD_SET_WATCHDOG_MS: "SET_WATCHDOG_MS",
    CMD_SET_MAX_FORCE_MN: "SET_MAX_FORCE_MN",
    CMD_SET_RATE_HZ: "SET_RATE_HZ",
    CMD_GET_INFO: "GET_INFO",
    CMD_SAVE_CALIBRATION: "SAVE_CALIBRATION",
    CMD_GET_COUNTER: "GET_COUNTER",
}

# CMD_GET_COUNTER arguments (device-side counters, returned in ACK.value).
COUNTER_FORCE_FRAMES = 0
COUNTER_FORCE_GAPS = 1
COUNTER_FRAME_ERRORS = 2
COUNTER_WATCHDOG_TRIPS = 3

# ACK.result codes.
ACK_OK = 0
ACK_UNKNOWN_OPCODE = 1
ACK_BAD_ARGUMENT = 2
ACK_REFUSED = 3

ACK_NAMES = {
    ACK_OK: "ok",
    ACK_UNKNOWN_OPCODE: "unknown opcode",
    ACK_BAD_ARGUMENT: "bad argument",
    ACK_REFUSED: "refused",
}

# FAULT.code values.
FAULT_WATCHDOG = 1  # detail: ms since the last FORCE frame
FAULT_FRAME_ERRORS = 2  # detail: number of bad frames received from the host
FAULT_NOT_HOMED = 3  # detail: 0
FAULT_ENCODER = 4  # detail: axis index
FAULT_OVERTEMP = 5  # detail: temperature [0.1 degC]
FAULT_AMPLIFIER = 6  # detail: axis index

FAULT_NAMES = {
    FAULT_WATCHDOG: "watchdog: no FORCE frame within the watchdog period",
    FAULT_FRAME_ERRORS: "too many bad frames from the host",
    FAULT_NOT_HOMED: "not homed",
    FAULT_ENCODER: "encoder fault",
    FAULT_OVERTEMP: "motor over temperature",
    FAULT_AMPLIFIER: "amplifier fault",
}

# Largest encoded body (between delimiters) a receiver must accept. The largest v1 frame is INFO:
# 1 + 65 + 2 = 68 decoded bytes, 69 encoded; 255 leaves room for minor-version growth.
MAX_ENCODED_LEN = 255
CRC_INIT = 0xFFFF

_STATE = struct.Struct("<IIiiiiBBiiiI")  # 42 bytes
_FORCE = struct.Struct("<IiiiiBI")  # 25 bytes
_CMD = struct.Struct("<HBi")  # 7 bytes
_ACK = struct.Struct("<HBBi")  # 8 bytes
_INFO = struct.Struct("<BBBBB16sffffffffffHH")  # 65 bytes
_FAULT = struct.Struct("<Bi")  # 5 bytes

STATE_STRUCT = _STATE
STATE_STATUS_OFFSET = 25  # payload offset of STATE.status
STATE_ECHO_OFFSET = 38  # payload offset of STATE.force_echo
FORCE_STRUCT = _FORCE
PAYLOAD_SIZES = {
    MSG_STATE: _STATE.size,
    MSG_FORCE: _FORCE.size,
    MSG_CMD: _CMD.size,
    MSG_ACK: _ACK.size,
    MSG_INFO: _INFO.size,
    MSG_FAULT: _FAULT.size,
}


class ProtocolError(ValueError):
    """A frame that passed CRC but does not hold a valid message (unknown type, wrong length)."""


class State(NamedTuple):
    """Device -> host sample, streamed at the stream rate.

    seq: frame counter (uint32, +1 per STATE, wraps); t_us: device clock [us] (uint32, wraps);
    position: raw encoder counts, 3 axes (int32); gripper: raw gripper counts (int32);
    buttons: bitfield (bit 0 = button 1, bit 1 = button 2); status: STATUS_* bits;
    force_mn: force the device believes it is applying [mN], 3 axes; force_echo: seq of the
    newest FORCE frame the device has received (0 before the first).
    """

    seq: int
    t_us: int
    position: tuple[int, int, int]
    gripper: int
    buttons: int
    status: int
    force_mn: tuple[int, int, int]
    force_echo: int


class Force(NamedTuple):
    """Host -> device force command, sent every host tick (also the heartbeat).

    seq: uint32 +1 per FORCE; force_mn: [mN], 3 axes, device frame; gripper_mn: [mN];
    flags: FORCE_* bits (enable); state_echo: seq of the newest STATE the host has received.
    """

    seq: int
    force_mn: tuple[int, int, int]
    gripper_mn: int
    flags: int
    state_echo: int


class Cmd(NamedTuple):
    """Host -> device command. token: uint16 chosen by the host, echoed in the ACK."""

    token: int
    opcode: int
    arg: int


class Ack(NamedTuple):
    """Device -> host reply to one CMD. result: ACK_*; value: effective value (opcode-specific)."""

    token: int
    opcode: int
    result: int
    value: int


class Info(NamedTuple):
    """Device description, sent after CMD GET_INFO.

    The first two payload bytes are the protocol major/minor version in every protocol version,
    so a host can refuse a device with another major version before parsing the rest.
    counts_per_m: encoder counts per metre, 3 axes; gripper_counts_per_rad [counts/rad];
    max_force_n [N]; max_gripper_force_n [N]; max_stiffness [N/m] (stable closed-loop stiffness at
    1 kHz); workspace_m: half extents of the reachable box [m], 3 axes; watchdog_ms [ms] and
    rate_hz [Hz]: current settings.
    """

    protocol: tuple[int, int]
    firmware: tuple[int, int, int]
    serial: str
    counts_per_m: tuple[float, float, float]
    gripper_counts_per_rad: float
    max_force_n: float
    max_gripper_force_n: float
    max_stiffness: float
    workspace_m: tuple[float, float, float]
    watchdog_ms: int
    rate_hz: int


class Fault(NamedTuple):
    """Device -> host fault report. code: FAULT_*; detail: code-specific int32."""

    code: int
    detail: int


Message = State | Force | Cmd | Ack | Info | Fault


# ----------------------------------------------------------------------------------------- COBS


def cobs_encode(data: bytes | bytearray) -> bytes:
    """Consistent Overhead Byte Stuffing: returns `data` with every 0x00 removed (+1 byte/254)."""
    out = bytearray()
    for block in bytes(data).split(b"\x00"):
        # A run of 254 non-zero bytes is code 0xFF with no implied zero after it.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(enc: bytes | bytearray | memoryview) -> bytearray | None:
    """Inverse of cobs_encode; None if `enc` is not valid COBS (a 0x00 or a code past the end)."""
    out = bytearray()
    i = 0
    n = len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            return None
        i += 1
        j = i + code - 1
        if j > n:
            return None
        out += enc[i:j]
        i = j
        if code != 0xFF and i < n:
            out.append(0)
    return out


# -------------------------------------------------------------------------------------- framing


def encode_frame(msg_type: int, payload: bytes | bytearray) -> bytes:
    """One wire frame: COBS(type | payload | CRC16 LE) + 0x00."""
    raw = bytearray((msg_type,))
    raw += payload
    raw += crc_hqx(raw, CRC_INIT).to_bytes(2, "little")
    return cobs_encode(raw) + b"\x00"


class FrameDecoder:
    """Stream decoder: bytes in, CRC-checked ``(type, payload)`` frames out; never raises.

    Keeps partial frames between calls. Counters (cumulative): frames (good), crc_errors,
    cobs_errors, short_frames (< 3 decoded bytes), oversize (more than MAX_ENCODED_LEN bytes
    without a delimiter; the receiver drops them and resynchronises at the next 0x00).
    """

    __slots__ = ("_buf", "_discard", "frames", "crc_errors", "cobs_errors", "short_frames",
                 "oversize")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discard = False
        self.frames = 0
        self.crc_errors = 0
        self.cobs_errors = 0
        self.short_frames = 0
        self.oversize = 0

    @property
    def errors(self) -> int:
        """All rejected frames."""
        return self.crc_errors + self.cobs_errors + self.short_frames + self.oversize

    def reset(self, resync: bool = False) -> None:
        """Forget any partial frame. resync=True also drops bytes up to the first 0x00: a host
        joining a stream mid-frame would otherwise count that fragment as a CRC error."""
        self._buf.clear()
        self._discard = resync

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        """Add received bytes; return the complete frames they finish, oldest first."""
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            z = buf.find(0, start)
            if z < 0:
                break
            if self._discard:
                self._discard = False
            elif z - start > MAX_ENCODED_LEN:
                self.oversize += 1
            elif z > start:
                self._frame(buf[start:z], out)
            start = z + 1
        if start:
            del buf[:start]
        if len(buf) > MAX_ENCODED_LEN:
            # Bound memory on a stream with no delimiters; the tail up to the next 0x00 is dropped.
            self.oversize += 1
            buf.clear()
            self._discard = True
        return out

    def _frame(self, enc: bytearray, out: list[tuple[int, bytes]]) -> None:
        raw = cobs_decode(enc)
        if raw is None:
            self.cobs_errors += 1
            return
        if len(raw) < 3:
            self.short_frames += 1
            return
        if crc_hqx(memoryview(raw)[:-2], CRC_INIT) != raw[-2] | (raw[-1] << 8):
            self.crc_errors += 1
            return
        self.frames += 1
        out.append((raw[0], bytes(raw[1:-2])))


# ------------------------------------------------------------------------------------- messages


def pack_payload(msg: Message) -> tuple[int, bytes]:
    """(type, payload bytes) of a message."""
    if isinstance(msg, State):
        return MSG_STATE, _STATE.pack(msg.seq, msg.t_us, *msg.position, msg.gripper, msg.buttons,
                                      msg.status, *msg.force_mn, msg.force_echo)
    if isinstance(msg, Force):
        return MSG_FORCE, _FORCE.pack(msg.seq, *msg.force_mn, msg.gripper_mn, msg.flags,
                                      msg.state_echo)
    if isinstance(msg, Cmd):
        return MSG_CMD, _CMD.pack(msg.token, msg.opcode, msg.arg)
    if isinstance(msg, Ack):
        return MSG_ACK, _ACK.pack(msg.token, msg.opcode, msg.result, msg.value)
    if isinstance(msg, Info):
        serial = msg.serial.encode("ascii", "replace")[:16]
        return MSG_INFO, _INFO.pack(*msg.protocol, *msg.firmware, serial, *msg.counts_per_m,
                                    msg.gripper_counts_per_rad, msg.max_force_n,
                                    msg.max_gripper_force_n, msg.max_stiffness, *msg.workspace_m,
                                    msg.watchdog_ms, msg.rate_hz)
    if isinstance(msg, Fault):
        return MSG_FAULT, _FAULT.pack(msg.code, msg.detail)
    raise TypeError(f"not a protocol message: {msg!r}")


def encode(msg: Message) -> bytes:
    """One complete wire frame for `msg`."""
    return encode_frame(*pack_payload(msg))


def info_version(payload: bytes) -> tuple[int, int]:
    """Protocol (major, minor) from an INFO payload of any protocol version."""
    if len(payload) < 2:
        raise ProtocolError(f"INFO payload of {len(payload)} bytes has no version")
    return payload[0], payload[1]


def decode_message(msg_type: int, payload: bytes) -> Message:
    """Parse a CRC-checked frame into its message; ProtocolError if type or length is wrong."""
    size = PAYLOAD_SIZES.get(msg_type)
    if size is None:
        raise ProtocolError(f"unknown message type 0x{msg_type:02x}")
    if msg_type == MSG_INFO:
        major, minor = info_version(payload)
        if major != PROTOCOL_MAJOR:
            raise ProtocolError(
                f"device speaks trocar protocol {major}.{minor}, this host speaks "
                f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; major versions differ")
        # Minor versions may append fields; parse the v1.0 prefix.
        if len(payload) < size:
            raise ProtocolError(f"INFO payload is {len(payload)} bytes, expected >= {size}")
        v = _INFO.unpack_from(payload)
        return Info((v[0], v[1]), (v[2], v[3], v[4]),
                    v[5].rstrip(b"\x00").decode("ascii", "replace"), (v[6], v[7], v[8]), v[9],
                    v[10], v[11], v[12], (v[13], v[14], v[15]), v[16], v[17])
    if len(payload) != size:
        raise ProtocolError(
            f"{MSG_NAMES[msg_type]} payload is {len(payload)} bytes, expected {size}")
    if msg_type == MSG_STATE:
        v = _STATE.unpack(payload)
        return State(v[0], v[1], (v[2], v[3], v[4]), v[5], v[6], v[7], (v[8], v[9], v[10]), v[11])
    if msg_type == MSG_FORCE:
        v = _FORCE.unpack(payload)
        return Force(v[0], (v[1], v[2], v[3]), v[4], v[5], v[6])
    if msg_type == MSG_CMD:
        return Cmd(*_CMD.unpack(payload))
    if msg_type == MSG_ACK:
        return Ack(*_ACK.unpack(payload))
    return Fault(*_FAULT.unpack(payload))


def fault_message(code: int, detail: int) -> str:
    """Human-readable one-line description of a FAULT."""
    name = FAULT_NAMES.get(code, f"unknown fault code {code}")
    if code == FAULT_WATCHDOG:
        return f"device {name} (no FORCE for {detail} ms); force zeroed, fault latched"
    return f"device fault: {name} (detail {detail})"
