"""`trocar bench device` (host <-> emulator over a pty) and `trocar bench device-fuzz`.

Owns the two measurements the haptics issue asks for: link quality at 1 kHz (achieved STATE rate,
round trip p50/p99/max [us], frames lost, CRC errors) and the decoder's behaviour on >= 1e6
randomly corrupted frames (never raises, never delivers a frame that was not sent, loses no intact
frame except the one whose delimiter a corruption destroyed).
"""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np

from haptics import protocol as P
from haptics.serial_device import EmulatedDevice


def run_device_bench(seconds: float, *, rate_hz: int = 1000, emulator_args: tuple = (),
                     spin: bool = True) -> dict:
    """Run the host servo loop at `rate_hz` against an emulator for `seconds` [s]; return stats.

    Each tick: read the newest sample, command a spring force towards the origin, write FORCE. The
    loop runs on the session's periodic scheduler (sim.runtime.scheduler); host_late_ticks counts the
    deadlines it dropped. Between ticks it waits on the port so STATE frames are timestamped on
    arrival.
    """
    from sim.runtime.scheduler import SPIN_NS, PeriodicScheduler

    dev = EmulatedDevice(*emulator_args, ramp_s=0.5, state_timeout_s=0.05)
    dev.open()
    try:
        # The session's scheduler; between ticks it waits on the port (dev.wait returns when a
        # STATE arrives), so frames are timestamped on arrival.
        sched = PeriodicScheduler(int(round(1e9 / rate_hz)), spin_ns=SPIN_NS if spin else 0,
                                  wait=dev.wait)
        tick_err = []
        states0 = dev.states
        first = {"seq": None, "tdev": 0}
        last = {"seq": None, "tdev": 0}
        t_start = time.perf_counter()
        until = time.perf_counter_ns() + int(seconds * 1e9)

        def tick(start_ns: int, lateness_ns: int) -> None:
            s = dev.read()
            if s.fresh:
                if first["seq"] is None:
                    first["seq"], first["tdev"] = s.seq, s.t_device_us
                last["seq"], last["tdev"] = s.seq, s.t_device_us
            dev.write_force(-200.0 * s.position)  # spring to the origin [N]
            tick_err.append(lateness_ns * 1e-9)

        sched.run(tick, until_ns=until)
        ticks, late = sched.ticks, sched.skipped
        first_seq, first_tdev = first["seq"], first["tdev"]
        last_seq, last_tdev = last["seq"], last["tdev"]
        elapsed = time.perf_counter() - t_start
        states = dev.states - states0
        p50, p99, pmax = dev.rtt_percentiles((50, 99, 100))
        dev_rate = (float("nan") if first_seq is None or last_tdev == first_tdev else
                    (last_seq - first_seq) / (((last_tdev - first_tdev) & 0xFFFFFFFF) * 1e-6))
        # Ask the device what it lost on its side (FORCE gaps) before closing.
        counters = {}
        for name, cid in (("force_frames", P.COUNTER_FORCE_FRAMES),
                          ("force_lost", P.COUNTER_FORCE_GAPS),
                          ("frame_errors", P.COUNTER_FRAME_ERRORS)):
            tok = dev.command(P.CMD_GET_COUNTER, cid)
            t_end = time.monotonic() + 1.0
            while tok in dev._pending and time.monotonic() < t_end:
                dev.write_force((0.0, 0.0, 0.0))
                dev.wait(0.001)
            ack = dev.acks.get(P.CMD_GET_COUNTER)
            counters[name] = ack.value if ack is not None and tok not in dev._pending else None
        te = np.abs(np.array(tick_err[1:])) * 1e6
        st = dev.stats()
        return {
            "bench": "device", "seconds": round(elapsed, 3), "rate_hz_target": rate_hz,
            "state_rate_hz": round(states / elapsed, 1),
            "state_rate_device_clock_hz": round(dev_rate, 1),
            "states": states, "host_ticks": ticks, "host_late_ticks": late,
            "host_tick_error_p99_us": round(float(np.percentile(te, 99)), 1) if len(te) else None,
            "rtt_p50_us": round(p50, 1), "rtt_p99_us": round(p99, 1), "rtt_max_us": round(pmax, 1),
            "frames_lost": st["frames_lost"], "crc_errors": st["crc_errors"],
            "framing_errors": st["framing_errors"], "duplicates": st["duplicates"],
            "device_force_frames": counters["force_frames"],
            "device_force_frames_lost": counters["force_lost"],
            "device_frame_errors": counters["frame_errors"],
            "events": [e.message for e in dev.events],
            "target_met": bool(p99 <= 2000.0 and st["frames_lost"] == 0),
        }
    finally:
        dev.close()


def _corrupt(frame: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    b = bytearray(frame)
    if kind == 0:  # flip 1..3 bits
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # drop a byte
        del b[rng.randrange(len(b))]
    elif kind == 2:  # insert garbage
        i = rng.randrange(len(b))
        b[i:i] = rng.randbytes(rng.randrange(1, 8))
    elif kind == 3:  # truncate (delimiter lost)
        b = b[: rng.randrange(1, len(b) - 1)]
    elif kind == 4:  # duplicate (both copies are intact frames)
        b = b + b
    else:  # random byte overwritten
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def run_fuzz_soak(frames: int, *, corrupt: float = 0.1, seed: int = 1) -> dict:
    """Feed `frames` STATE frames, a fraction `corrupt` of them damaged, through one FrameDecoder.

    Chunks of random size (1..511 bytes) model serial reads. Counts: delivered frames that were
    never sent (undetected corruption: a CRC-16 lets ~1 in 65536 damaged frames through), intact
    frames lost (allowed only right after a damaged frame whose delimiter was lost), exceptions.
    """
    rng = random.Random(seed)
    dec = P.FrameDecoder()
    state = P.STATE_STRUCT
    corrupted = delivered = undetected = lost_intact = lost_unexplained = exceptions = 0
    prev_damaged = False
    prev_keys: set[bytes] = set()
    stream = bytearray()
    batch = 2000
    t0 = time.perf_counter()
    for start in range(0, frames, batch):
        stream.clear()
        keys: set[bytes] = set()
        intact: list[tuple[bytes, bool]] = []  # (type+payload, previous frame was damaged)
        for k in range(start, min(start + batch, frames)):
            r = rng.getrandbits(64)
            payload = state.pack(k, (k * 1000) & 0xFFFFFFFF, (r & 0xFFFFF) - 0x80000,
                                 ((r >> 20) & 0xFFFFF) - 0x80000, ((r >> 40) & 0xFFFF) - 0x8000,
                                 (r >> 56) * 7, k & 3, 0x23, 0, -1000, 250, (k - 1) & 0xFFFFFFFF)
            key = bytes((P.MSG_STATE,)) + payload
            keys.add(key)
            frame = P.encode_frame(P.MSG_STATE, payload)
            damaged = rng.random() < corrupt
            if damaged:
                corrupted += 1
                frame = _corrupt(frame, rng)
            else:
                intact.append((key, prev_damaged))
            prev_damaged = damaged
            stream += frame
        got: set[bytes] = set()
        i, n = 0, len(stream)
        while i < n:
            j = min(n, i + rng.randrange(1, 512))
            try:
                out = dec.feed(stream[i:j])
            except Exception:  # noqa: BLE001 - the soak counts what must never happen
                exceptions += 1
                out = []
            for t, pl in out:
                key = bytes((t,)) + pl
                delivered += 1
                if key in keys or key in prev_keys:
                    got.add(key)
                else:
                    undetected += 1
            i = j
        for key, after_damage in intact:
            if key not in got:
                lost_intact += 1
                lost_unexplained += not after_damage
        prev_keys = keys
    elapsed = time.perf_counter() - t0
    return {"bench": "device-fuzz", "frames": frames, "corrupted": corrupted,
            "intact": frames - corrupted, "delivered": delivered,
            "intact_lost_after_damaged_frame": lost_intact - lost_unexplained,
            "intact_lost_unexplained": lost_unexplained,
            "undetected_corruptions": undetected, "exceptions": exceptions,
            "crc_errors": dec.crc_errors, "cobs_errors": dec.cobs_errors,
            "short_frames": dec.short_frames, "oversize": dec.oversize,
            "seconds": round(elapsed, 2), "frames_per_s": round(frames / elapsed),
            "ok": exceptions == 0 and lost_unexplained == 0}


def print_json(d: dict) -> None:
    print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                      for k, v in d.items()}))

