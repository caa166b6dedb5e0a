"""Seqlock mailbox: one writer publishes a dict of fixed-shape arrays, readers copy the newest one.

Owns the shared-memory layout and the seqlock protocol. No queues, no pickling, no locks: the
writer never waits for a reader, and a reader never blocks the writer (it retries instead).

API (used by the renderer, `sim.render.process.render_main`, and the multirate servo):

    layout = layout_of(scene.snapshot())        # {name: (shape tuple, dtype str)}, picklable
    box = SnapshotMailbox.create(layout)        # writer side; box.name is the shm name
    box.write(scene.snapshot())                 # publish (copies into shared memory)
    reader = SnapshotMailbox.attach(box.name, layout)
    out = reader.empty()                        # dict of arrays shaped like the layout
    seq = reader.read_into(out)                 # int: even sequence of the copy; None: nothing yet
    reader.seq                                  # current sequence (cheap "anything new?" check)
    reader.close(); box.close(); box.unlink()   # unlink once, by the owner

Seqlock: the 8-byte counter at offset 0 is odd while a write is in progress. The writer bumps it
to odd, copies the arrays, bumps it to even. A reader reads the counter (retry if odd), copies the
arrays, reads the counter again and keeps the copy only if both reads are equal; otherwise it
retries (up to `retries` times, then returns None and the caller keeps its previous copy).
`write_count` = seq // 2. Ordering: each counter update is one aligned 8-byte store; x86-64
keeps stores in program order and loads in program order (TSO), which is all this needs; a
weakly ordered CPU (ARM) would need fences here.

Memory layout: 64-byte header (u64 seq, u64 reserved...), then each array in layout order at a
64-byte aligned offset, C order.
"""

from __future__ import annotations

from multiprocessing import resource_tracker, shared_memory

import numpy as np

HEADER_BYTES = 64
_ALIGN = 64

Layout = dict[str, tuple[tuple[int, ...], str]]


def layout_of(arrays: dict[str, np.ndarray]) -> Layout:
    """The mailbox layout that carries `arrays` (e.g. a `scene.snapshot()`)."""
    return {k: (tuple(int(n) for n in np.shape(v)), np.asarray(v).dtype.str) for k, v in arrays.items()}


def _offsets(layout: Layout) -> tuple[dict[str, int], int]:
    off = HEADER_BYTES
    out = {}
    for name, (shape, dtype) in layout.items():
        out[name] = off
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        off += -(-n // _ALIGN) * _ALIGN
    return out, max(off, HEADER_BYTES + _ALIGN)


class SnapshotMailbox:
    """A seqlock-protected set of arrays in one shared-memory block (see the module docstring)."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: Layout, owner: bool) -> None:
        self.shm = shm
        self.name = shm.name
        self.layout = {k: (tuple(s), str(d)) for k, (s, d) in layout.items()}
        self.owner = owner
        offsets, _ = _offsets(self.layout)
        self._seq = np.ndarray((1,), dtype=np.uint64, buffer=shm.buf, offset=0)
        self.views: dict[str, np.ndarray] = {
            name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=offsets[name])
            for name, (shape, dtype) in self.layout.items()}

    @classmethod
    def create(cls, layout: Layout, name: str | None = None) -> SnapshotMailbox:
        """New zeroed mailbox (the writer's side; the creator unlinks it)."""
        _, size = _offsets(layout)
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        shm.buf[:HEADER_BYTES] = bytes(HEADER_BYTES)
        return cls(shm, layout, owner=True)

    @classmethod
    def attach(cls, name: str, layout: Layout) -> SnapshotMailbox:
        """Open an existing mailbox by name with the layout it was created with."""
        shm = _attach_untracked(name)
        _, size = _offsets(layout)
        if shm.size < size:
            shm.close()
            raise ValueError(f"mailbox {name}: {shm.size} bytes, layout needs {size}")
        return cls(shm, layout, owner=False)

    # -- writer ------------------------------------------------------------------------------

    def write(self, arrays: dict[str, np.ndarray]) -> int:
        """Publish `arrays` (every layout key, matching shapes). Returns the new (even) sequence."""
        seq = self._seq
        seq[0] += 1  # odd: write in progress
        for name, view in self.views.items():
            view[...] = arrays[name]
        seq[0] += 1  # even: consistent
        return int(seq[0])

    # -- reader ------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The current sequence counter (even: consistent; 0: nothing written yet)."""
        return int(self._seq[0])

    @property
    def write_count(self) -> int:
        """Snapshots published so far."""
        return self.seq // 2

    def empty(self) -> dict[str, np.ndarray]:
        """A dict of zeroed arrays shaped like the layout (a target for read_into)."""
        return {name: np.zeros(v.shape, v.dtype) for name, v in self.views.items()}

    def read_into(self, out: dict[str, np.ndarray], retries: int = 100) -> int | None:
        """Copy the newest consistent snapshot into `out`; its sequence, or None if nothing has
        been written yet or no consistent copy was had in `retries` tries (out then may hold a
        torn copy: keep the previous one if that matters)."""
        seq = self._seq
        for _ in range(retries):
            s1 = int(seq[0])
            if s1 == 0:
                return None
            if s1 & 1:
                continue
            for name, view in self.views.items():
                np.copyto(out[name], view)
            if int(seq[0]) == s1:
                return s1
        return None

    def read(self) -> dict[str, np.ndarray] | None:
        """A fresh copy of the newest snapshot, or None."""
        out = self.empty()
        return out if self.read_into(out) is not None else None

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this process's mapping (views become invalid)."""
        self.views = {}
        self._seq = None
        try:
            self.shm.close()
        except BufferError:  # a caller still holds a view; the mapping goes with the process
            pass

    def unlink(self) -> None:
        """Remove the segment name (owner, once). Idempotent."""
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment without registering it with the resource tracker: Python < 3.13
    registers attached segments too, and a reader's tracker would then unlink the writer's
    segment when the reader exits (3.13 has track=False for this)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:
        pass
    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def unlink_name(name: str) -> None:
    """Remove a mailbox by name (a supervisor cleaning up after a crashed owner). Idempotent."""
    try:
        shm = _attach_untracked(name)
    except FileNotFoundError:
        return
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
