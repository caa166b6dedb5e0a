"""Decoder fuzzing: arbitrary bytes never raise, only CRC-valid frames come out, resync works."""

from __future__ import annotations

from binascii import crc_hqx

from hypothesis import given, settings
from hypothesis import strategies as st

from haptics import protocol as P
from haptics.bench import run_fuzz_soak

MSGS = st.one_of(
    st.builds(P.Force, st.integers(0, 2**32 - 1),
              st.tuples(*[st.integers(-2**31, 2**31 - 1)] * 3), st.integers(-2**31, 2**31 - 1),
              st.integers(0, 255), st.integers(0, 2**32 - 1)),
    st.builds(P.Cmd, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(-2**31, 2**31 - 1)),
    st.builds(P.Fault, st.integers(0, 255), st.integers(-2**31, 2**31 - 1)),
)


def reference_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Slow, obviously-correct reference: split on 0x00, COBS-decode, check length and CRC."""
    out = []
    chunks = data.split(b"\x00")[:-1]  # the tail has no delimiter yet
    for chunk in chunks:
        if not chunk or len(chunk) > P.MAX_ENCODED_LEN:
            continue
        raw = P.cobs_decode(chunk)
        if raw is None or len(raw) < 3:
            continue
        if crc_hqx(bytes(raw[:-2]), 0xFFFF) == int.from_bytes(raw[-2:], "little"):
            out.append((raw[0], bytes(raw[1:-2])))
    return out


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_and_yield_exactly_the_crc_valid_frames(data):
    got = P.FrameDecoder().feed(data)
    assert got == reference_frames(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), MSGS.map(P.encode)), max_size=12),
       st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_chunking_does_not_change_what_is_decoded(pieces, cuts):
    data = b"".join(pieces)
    whole = P.FrameDecoder().feed(data)
    dec = P.FrameDecoder()
    got, i, k = [], 0, 0
    while i < len(data):
        j = i + cuts[k % len(cuts)]
        got += dec.feed(data[i:j])
        i, k = j, k + 1
    assert got == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), MSGS, MSGS)
def test_decoder_resynchronises_on_the_first_intact_frame_after_garbage(garbage, m1, m2):
    # Garbage without a delimiter swallows the frame it runs into (that frame is lost); the first
    # frame whose leading delimiter survived comes out intact.
    dec = P.FrameDecoder()
    out = dec.feed(garbage + b"\x00" + P.encode(m1) + P.encode(m2))
    assert [P.decode_message(*f) for f in out[-2:]] == [m1, m2]
    dec = P.FrameDecoder()
    out = dec.feed(garbage.replace(b"\x00", b"") + P.encode(m1) + P.encode(m2))
    assert P.decode_message(*out[-1]) == m2


@settings(max_examples=200, deadline=None)
@given(MSGS, st.integers(0, 10_000), st.integers(0, 7))
def test_any_single_bit_flip_is_rejected(msg, pos, bit):
    frame = bytearray(P.encode(msg))
    i = pos % (len(frame) - 1)  # not the delimiter
    frame[i] ^= 1 << bit
    for t, payload in P.FrameDecoder().feed(bytes(frame) + P.encode(msg)):
        assert P.decode_message(t, payload) == msg  # only the intact copy may come out


def test_long_runs_without_delimiter_are_dropped_with_bounded_memory():
    dec = P.FrameDecoder()
    for _ in range(100):
        assert dec.feed(b"\x55" * 1000) == []
    assert len(dec._buf) <= P.MAX_ENCODED_LEN
    frame = P.encode(P.Fault(1, 2))
    # the first delimiter ends the junk; the next frame is intact
    assert dec.feed(b"\x00" + frame) == [P.pack_payload(P.Fault(1, 2))]
    assert dec.oversize >= 1


def test_soak_of_corrupted_frames_loses_nothing_it_should_not():
    r = run_fuzz_soak(20_000, corrupt=0.2, seed=7)
    assert r["exceptions"] == 0
    assert r["intact_lost_unexplained"] == 0
    assert r["undetected_corruptions"] <= 2  # CRC-16: ~1 in 65536 damaged frames slips through
    assert r["corrupted"] > 3000 and r["crc_errors"] + r["cobs_errors"] > 1000
