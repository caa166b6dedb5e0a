"""Wire protocol: every message round-trips through the framing; the doc's hex examples decode."""

from __future__ import annotations

import re
from binascii import crc_hqx
from pathlib import Path

import pytest

from haptics import protocol as P

DOC = Path(__file__).resolve().parents[2] / "docs" / "haptics-protocol.md"

MESSAGES = [
    P.State(7, 1000, (1234, -1, 0), 600, 1, 0x23, (1000, -500, 0), 1),
    P.State(0xFFFFFFFF, 0xFFFFFFFF, (-2**31, 2**31 - 1, 0), -5, 3, 0x3F, (0, 0, -5000), 0),
    P.Force(1, (1000, -500, 0), 0, P.FORCE_ENABLE, 42),
    P.Force(2**32 - 1, (0, 0, 0), -2000, 0, 0),
    P.Cmd(1, P.CMD_GET_INFO, 0),
    P.Cmd(0xFFFF, P.CMD_SET_WATCHDOG_MS, 50),
    P.Ack(1, P.CMD_SET_MAX_FORCE_MN, P.ACK_OK, 5000),
    P.Ack(9, 99, P.ACK_UNKNOWN_OPCODE, 0),
    P.Info((1, 0), (1, 2, 3), "EMU-0001", (1e5, 1e5, 2e5), 2000.0, 5.0, 2.0, 2000.0,
           (0.08, 0.08, 0.06), 50, 1000),
    P.Fault(P.FAULT_WATCHDOG, 51),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips_through_the_frame_decoder(msg):
    frame = P.encode(msg)
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    frames = P.FrameDecoder().feed(frame)
    assert len(frames) == 1
    decoded = P.decode_message(*frames[0])
    if isinstance(msg, P.Info):  # float32 on the wire
        assert decoded.serial == msg.serial and decoded.protocol == msg.protocol
        assert decoded.counts_per_m == pytest.approx(msg.counts_per_m)
        assert decoded.workspace_m == pytest.approx(msg.workspace_m, rel=1e-6)
        assert decoded.max_force_n == pytest.approx(5.0)
    else:
        assert decoded == msg


def test_crc_is_crc16_ccitt_false_with_the_standard_check_value():
    assert crc_hqx(b"123456789", P.CRC_INIT) == 0x29B1


def _doc_hex_blocks() -> list[bytes]:
    text = DOC.read_text()
    blocks = re.findall(r"```\n((?:[0-9a-f]{2} )+00)\n```", text)
    return [bytes.fromhex(b) for b in blocks]


def test_worked_examples_in_the_doc_decode_to_the_documented_values():
    frames = _doc_hex_blocks()
    assert len(frames) == 2, "doc should hold the STATE and GET_INFO examples as bare hex"
    state = P.decode_message(*P.FrameDecoder().feed(frames[0])[0])
    assert state == P.State(7, 1000, (1234, -1, 0), 600, 1, 0x23, (1000, -500, 0), 1)
    cmd = P.decode_message(*P.FrameDecoder().feed(frames[1])[0])
    assert cmd == P.Cmd(1, P.CMD_GET_INFO, 0)
    # The annotated FORCE example: its "on wire" line.
    m = re.search(r"on wire\s+((?:[0-9a-f]{2} )+00)", DOC.read_text())
    force = P.decode_message(*P.FrameDecoder().feed(bytes.fromhex(m.group(1)))[0])
    assert force == P.Force(1, (1000, -500, 0), 0, P.FORCE_ENABLE, 42)


def test_doc_payload_sizes_match_the_code():
    text = DOC.read_text()
    for msg_type, size in P.PAYLOAD_SIZES.items():
        name = P.MSG_NAMES[msg_type]
        assert re.search(rf"\| 0x{msg_type:02x} \| {name}\s+\|[^|]+\| {size}\b", text), name


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 508, 600])
def test_cobs_round_trips_runs_around_the_254_byte_block_limit(n):
    data = bytes((i % 255) + 1 for i in range(n))  # no zeros: the longest blocks
    enc = P.cobs_encode(data)
    assert b"\x00" not in enc
    assert P.cobs_decode(enc) == data
    zeros = bytes(n)
    assert P.cobs_decode(P.cobs_encode(zeros)) == zeros


def test_decoder_rejects_a_frame_with_one_flipped_bit_and_counts_it():
    frame = bytearray(P.encode(P.Force(5, (1, 2, 3), 4, 1, 6)))
    frame[7] ^= 0x10
    dec = P.FrameDecoder()
    assert dec.feed(bytes(frame)) == []
    assert dec.errors == 1


def test_wrong_payload_length_and_unknown_type_raise_protocol_error():
    with pytest.raises(P.ProtocolError, match="STATE payload is 3 bytes, expected 42"):
        P.decode_message(P.MSG_STATE, b"abc")
    with pytest.raises(P.ProtocolError, match="unknown message type 0x7f"):
        P.decode_message(0x7F, b"")


def test_info_with_another_major_version_is_refused_with_a_clear_message():
    _, payload = P.pack_payload(MESSAGES[8])
    v2 = bytes((2, 3)) + payload[2:] + b"newfield"
    with pytest.raises(P.ProtocolError,
                       match=r"device speaks trocar protocol 2\.3, this host speaks 1\.0"):
        P.decode_message(P.MSG_INFO, v2)


def test_info_from_a_newer_minor_version_with_appended_fields_parses():
    _, payload = P.pack_payload(MESSAGES[8])
    v11 = bytes((1, 1)) + payload[2:] + b"\x01\x02\x03\x04"
    info = P.decode_message(P.MSG_INFO, v11)
    assert info.protocol == (1, 1) and info.serial == "EMU-0001"
