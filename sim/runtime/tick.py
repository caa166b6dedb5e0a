"""The one tick both modes run: device sample -> targets -> scene.tick -> force -> record/publish.

`TickCore.step()` is steps 1-8 of the tick in ../shared/ARCHITECTURE.md (step 9, timing, belongs
to the caller: the real-time loop measures against deadlines, lockstep does not). Nothing here
reads the wall clock into the simulation: the scene only sees the recorded targets and jaws, so
a recording replays bit-exactly.
"""

from __future__ import annotations

import numpy as np

from sim.runtime.devices import WorkspaceMap
from sim.runtime.mailbox import SnapshotMailbox
from sim.runtime.recording import RecordingWriter
from sim.scene import Scene, SceneControl


class TickCore:
    """One session's per-tick work. device may be None (no device: tools hold).

    publish_every: snapshot to `mailbox` every N ticks; checksum_every: scene checksum into the
    recording every N ticks (after the tick).
    """

    def __init__(self, scene: Scene, device, wmap: WorkspaceMap, recorder: RecordingWriter | None,
                 mailbox: SnapshotMailbox | None = None, *, publish_every: int = 10,
                 checksum_every: int = 100, t0_ns: int = 0) -> None:
        self.scene = scene
        self.device = device
        self.wmap = wmap
        self.recorder = recorder
        self.mailbox = mailbox
        self.publish_every = publish_every
        self.checksum_every = checksum_every
        self.t0_ns = t0_ns
        hold = scene.hold_control()
        self.control = SceneControl(hold.targets.copy(), hold.jaws.copy())
        self.force = np.zeros(3)  # last force commanded to the device [N]
        self.coupling = np.zeros((scene.n_tools, 3))
        self._n_events = len(scene.events)
        self.published = 0

    def step(self, now_ns: int, lateness_ns: int = 0) -> None:
        """One tick. `now_ns`: perf_counter_ns at the tick start (recorded, not simulated)."""
        scene = self.scene
        control = self.control
        dev = self.device
        sample = dev.read() if dev is not None else None
        if sample is not None and sample.connected:
            self.wmap.apply(sample.position, sample.gripper, control.targets, control.jaws)
        tick = scene.tick_count
        coupling = scene.tick(control, scene.dt)
        self.coupling = coupling
        c = coupling[self.wmap.tool]
        f = self.force
        f[0] = -c[0]
        f[1] = -c[1]
        f[2] = -c[2]
        if dev is not None:
            dev.write_force(f)
        rec = self.recorder
        if rec is not None:
            i = rec.next_row()
            fl = rec.fields
            fl["tick"][i] = tick
            fl["t"][i] = (now_ns - self.t0_ns) * 1e-9
            if sample is not None:
                fl["dev_t"][i] = sample.t
                fl["dev_seq"][i] = sample.seq
                fl["dev_pos"][i] = sample.position
                fl["dev_grip"][i] = sample.gripper
                fl["dev_buttons"][i] = sample.buttons
                fl["dev_status"][i] = sample.status
                fl["dev_flags"][i] = int(sample.fresh) | (int(sample.connected) << 1)
            else:
                fl["dev_flags"][i] = 0
            fl["targets"][i] = control.targets
            fl["jaws"][i] = control.jaws
            fl["force"][i] = f
            fl["lateness_ns"][i] = lateness_ns
        events = scene.events
        if len(events) != self._n_events:
            if rec is not None:
                for e in events[self._n_events:]:
                    rec.event(e.tick, e.kind, e.tool, e.value, e.message, e.body)
            self._n_events = len(events)
        if self.checksum_every and scene.tick_count % self.checksum_every == 0 and rec is not None:
            rec.checksum(scene.tick_count - 1, scene.checksum())
        if self.mailbox is not None and scene.tick_count % self.publish_every == 0:
            self.mailbox.write(scene.snapshot())
            self.published += 1

    def finish_row(self, compute_ns: int) -> None:
        """Store the tick's compute time in its recorded row (after the caller measured it)."""
        rec = self.recorder
        if rec is not None and rec.n:
            rec.fields["compute_ns"][rec.n - 1] = compute_ns

    def zero_force(self) -> None:
        """Command zero force now (shutdown, errors)."""
        self.force[:] = 0.0
        if self.device is not None:
            try:
                self.device.zero()
            except Exception:  # noqa: BLE001 - a shutdown path must go on
                pass
