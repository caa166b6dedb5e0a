"""The seqlock mailbox: a reader process never sees a torn snapshot from a writer process."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

from sim.runtime.mailbox import SnapshotMailbox, layout_of, unlink_name

LAYOUT = layout_of({"big": np.zeros((400, 3)), "links": np.zeros((2, 3, 7)), "tick": np.zeros(1),
                    "empty": np.zeros((0, 7)), "count": np.zeros(4, np.int64)})


def _writer(name: str, stop, written) -> None:
    box = SnapshotMailbox.attach(name, LAYOUT)
    arrays = {k: np.zeros(s, d) for k, (s, d) in LAYOUT.items()}
    i = 0
    while not stop.is_set():
        i += 1
        for a in arrays.values():
            a.fill(i)  # every element of every array carries the same number
        box.write(arrays)
    written.value = i
    box.close()


def _reader(name: str, stop, result) -> None:
    box = SnapshotMailbox.attach(name, LAYOUT)
    out = box.empty()
    reads = torn = distinct = failed = 0
    last = -1.0
    while not stop.is_set():
        seq = box.read_into(out)
        if seq is None:
            failed += 1
            continue
        reads += 1
        v = out["tick"][0]
        if any(np.any(a != v) for a in out.values()):
            torn += 1
        if v != last:
            distinct += 1
            last = v
            result[0], result[1], result[2], result[3] = reads, torn, distinct, failed
    result[0], result[1], result[2], result[3] = reads, torn, distinct, failed
    box.close()


def test_reader_process_never_sees_a_torn_snapshot_from_a_writer_process():
    ctx = mp.get_context("spawn")
    box = SnapshotMailbox.create(LAYOUT)
    stop = ctx.Event()
    written = ctx.Value("q", 0)
    result = ctx.Array("q", 4)
    procs = [ctx.Process(target=_writer, args=(box.name, stop, written)),
             ctx.Process(target=_reader, args=(box.name, stop, result))]
    try:
        for p in procs:
            p.start()
        # Run until the reader has copied many different snapshots; how long that takes depends
        # on the machine's load, so the bound is generous and only the outcome is asserted.
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and (result[2] < 500 or box.write_count < 5000):
            time.sleep(0.05)
    finally:
        stop.set()
        for p in procs:
            p.join(20)
            if p.is_alive():
                p.kill()
                p.join()
        box.close()
        box.unlink()
    reads, torn, distinct, failed = result[:]
    assert procs[0].exitcode == 0 and procs[1].exitcode == 0
    assert written.value >= 5000 and reads >= 500 and distinct >= 500
    assert torn == 0


def test_read_before_any_write_returns_none_and_layout_round_trips():
    box = SnapshotMailbox.create(LAYOUT)
    try:
        reader = SnapshotMailbox.attach(box.name, LAYOUT)
        out = reader.empty()
        assert reader.read_into(out) is None
        snap = {k: np.full(s, 7, d) for k, (s, d) in LAYOUT.items()}
        assert box.write(snap) == 2 and reader.seq == 2 and reader.write_count == 1
        assert reader.read_into(out) == 2
        assert all(np.array_equal(out[k], snap[k]) for k in LAYOUT)
        reader.close()
    finally:
        box.close()
        box.unlink()
    unlink_name(box.name)  # idempotent
