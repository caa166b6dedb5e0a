"""The session step: the one function that advances a session by one tick. Every loop calls it.

Callers: the real-time servo (`sim.runtime.realtime`), the multirate physics process
(`sim.runtime.multirate`), lockstep and replay (`sim.runtime.lockstep`), the scripted render
(`sim.render.offscreen`) and the benchmarks. A session = scene + hands (device, workspace map) +
optional procedure + optional recording + optional snapshot mailbox.

`SessionStep.step()` is steps 1-8 of the tick in ../shared/ARCHITECTURE.md (step 9, timing,
belongs to the caller's scheduler), in this order:

1. per hand: `device.observe(scene, wmap)` if the device has it (scripted policies look at the world
   here and act only through their next sample), `sample = device.read()`, and if the sample is
   connected `wmap.apply(...)` writes that hand's tool target and jaw (after `wmap.connect(...)`
   when the link has just come up: the tool glides to the hand); a press of `EXCHANGE_BUTTON`
   (rising edge) first exchanges the hand's instrument (`wmap.exchange`, for a hand holding more
   than one: the cholecystectomy's right hand, applier then scissors);
   (replay and the scripted render pass the control instead: `step(..., control=...)`)
2. `scene.tick(control)`; the new scene events of this tick;
3. `procedure.update(scene, tick, new_events)` if a procedure is given (duck-typed);
4. per hand: force = -coupling force on its tool [N], written to its device;
5. the recording row (targets, jaws, per-hand device sample and force, tool and scope poses), the
   events, a checksum every `checksum_every` ticks;
6. a snapshot to the mailbox every `publish_every` ticks: `scene.snapshot()` plus `hud`, the
   procedure's hud() as UTF-8 JSON in a fixed-size uint8 array (zero padded; `decode_hud`), with
   the instructor's message and mark under "instructor" when the session is shared (`guide`),
   `pub_ns`, the publish time (perf_counter_ns: displays measure their latency from it),
   `jaws` (n_tools,) the commanded jaw angles [rad] (the HUD shows open/closed), `force_env`
   (n_tools,) the force envelope [N]: max(|F|, previous * exp(-dt / FORCE_ENV_TAU_S)) per tick,
   so a display sampling at frame rate still sees a brief contact (the headset's vibration), and
   `version` (1,) = `sim.scene_topology.SNAPSHOT_VERSION`, the one version of the whole layout
   (bump it when these keys or their shapes change: displays run in other processes, the
   headset's in another root, from the same checkout; the tissue arrays have fixed capacities
   so a cut or tear changes no shape).

`hold()` is the tick of a paused session (`trocar run --share`, the console's pause): devices are
read and sent zero force, the scene and the procedure do not advance, snapshots go on.

Nothing here reads the wall clock into the simulation: the scene only sees the targets and jaws
(recorded), so a recording replays bit-exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from haptics.device import EXCHANGE_BUTTON
from sim.hud_state import HUD_BYTES, decode_hud, encode_hud  # noqa: F401 - re-exported
from sim.runtime.devices import WorkspaceMap, open_device
from sim.scene import SceneControl
from sim.scene_topology import SNAPSHOT_VERSION

_NO_EVENTS: tuple = ()
FORCE_ENV_TAU_S = 0.1  # decay time of the force envelope [s]


@dataclass
class Hand:
    """One driven tool: its device (a HapticDevice, or None: the tool holds) and workspace map."""

    device: object | None
    wmap: WorkspaceMap


def open_hands(hands: list[Hand], choices, *, soft_start_s: float = 2.0, inputs=None) -> None:
    """Open hand h's device from choices[h] (parsed, emulators resolved), in hand order; inputs: the
    window's input mailbox for keyboard hands. On an error the devices already open are zeroed and
    closed, and the error propagates."""
    n_keyboard = sum(c.kind == "keyboard" for c in choices)
    try:
        for h, choice in enumerate(choices):
            hands[h].device = open_device(choice, soft_start_s=soft_start_s, hand=h, inputs=inputs,
                                          keyboard_hands=n_keyboard)
    except BaseException:
        close_hands(hands)
        raise


def zero_hands(hands: list[Hand]) -> None:
    """Command zero force on every hand's device now (safety paths; never raises)."""
    for hand in hands:
        if hand.device is not None:
            try:
                hand.device.zero()
            except Exception:  # noqa: BLE001 - a shutdown path must go on to the other hands
                pass


def close_hands(hands: list[Hand]) -> None:
    """Zero every hand's force, then close and drop its device (shutdown; never raises)."""
    zero_hands(hands)
    for hand in hands:
        dev, hand.device = hand.device, None
        if dev is not None:
            try:
                dev.close()
            except Exception:  # noqa: BLE001 - the other hands must still be closed
                pass




class SessionStep:
    """One session's per-tick work (see the module docstring).

    scene: a `sim.scene.Scene`; hands: list of `Hand` (one per driven tool; two = bimanual);
    procedure: object with update(scene, tick, events) and hud() -> dict, or None; recorder: a
    `RecordingWriter` (rows sized for scene.n_tools and len(hands)) or None; mailbox: a
    `SnapshotMailbox` with the layout of `layout()` or None; t0_ns: perf_counter_ns of session
    start (recorded t = now - t0).

    Attributes after each step: force (n_hands, 3) [N] commanded per hand; coupling (n_tools, 3) [N];
    samples: the last sample per hand (None before the first); published: snapshots written.
    scope_control: None, or an object whose update(scene) moves scene.scope before each live tick
    (`sim.runtime.keyboard.ScopeKeys`: the window's scope keys).
    """

    def __init__(self, scene, hands: list[Hand], *, procedure=None, recorder=None, mailbox=None,
                 publish_every: int = 10, checksum_every: int = 100, t0_ns: int = 0) -> None:
        self.scene = scene
        self.hands = list(hands)
        self.procedure = procedure
        self.recorder = recorder
        self.mailbox = mailbox
        self.publish_every = max(1, int(publish_every))
        self.checksum_every = checksum_every
        self.t0_ns = t0_ns
        hold = scene.hold_control()
        self.control = SceneControl(hold.targets.copy(), hold.jaws.copy())
        self.force = np.zeros((max(1, len(self.hands)), 3))
        self.coupling = np.zeros((scene.n_tools, 3))
        self.samples: list = [None] * len(self.hands)
        self.hud = np.zeros(HUD_BYTES, np.uint8)
        self._n_events = len(scene.events)
        self.published = 0
        self.scope_control = None
        self.guide = None  # sim.runtime.share.GuideChannel of a shared session, else None
        self._held = 0
        self._zero = np.zeros(3)
        self._link_up = [False] * len(self.hands)  # per hand: last sample connected (glide on link-up)
        self._buttons = [0] * len(self.hands)  # per hand: the last connected sample's buttons (edges)
        self.force_env = np.zeros(scene.n_tools)
        self._env_decay = float(np.exp(-scene.dt / FORCE_ENV_TAU_S))

    # -- the tick ------------------------------------------------------------------------------------

    def step(self, now_ns: int, lateness_ns: int = 0, *, control: SceneControl | None = None) -> None:
        """One tick. now_ns: perf_counter_ns at the tick start (recorded, not simulated).
        control: targets and jaws to use instead of the devices (replay, scripted render)."""
        scene = self.scene
        ctl = self.control
        samples = self.samples
        if control is None:
            if self.scope_control is not None:
                self.scope_control.update(scene)
            for h, hand in enumerate(self.hands):
                dev = hand.device
                if dev is None:
                    samples[h] = None
                    continue
                observe = getattr(dev, "observe", None)
                if observe is not None:
                    observe(scene, hand.wmap)
                s = dev.read()
                samples[h] = s
                up = s is not None and s.connected
                if up:
                    if not self._link_up[h]:
                        hand.wmap.connect(s.position, ctl.targets, scene.dt)
                    elif s.buttons & EXCHANGE_BUTTON and not self._buttons[h] & EXCHANGE_BUTTON:
                        hand.wmap.exchange(s.position, ctl.targets, scene.dt)
                    self._buttons[h] = s.buttons
                    hand.wmap.apply(s.position, s.gripper, ctl.targets, ctl.jaws, s.roll)
                self._link_up[h] = up
        else:
            ctl.targets[:] = control.targets
            ctl.jaws[:] = control.jaws
        tick = scene.tick_count
        coupling = scene.tick(ctl, scene.dt)
        self.coupling = coupling
        events = scene.events
        new_events = events[self._n_events:] if len(events) != self._n_events else _NO_EVENTS
        if self.procedure is not None:
            self.procedure.update(scene, tick, new_events)
        env = self.force_env
        decay = self._env_decay
        for i in range(len(env)):
            c = coupling[i]
            mag = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]) ** 0.5
            env[i] = max(mag, env[i] * decay)
        f = self.force
        for h, hand in enumerate(self.hands):
            c = coupling[hand.wmap.tool]
            f[h, 0] = -c[0]
            f[h, 1] = -c[1]
            f[h, 2] = -c[2]
            if hand.device is not None and control is None:
                hand.device.write_force(f[h])
        rec = self.recorder
        if rec is not None:
            self._record(rec, tick, now_ns, lateness_ns)
            for e in new_events:
                rec.event(e.tick, e.kind, e.tool, e.value, e.message, e.body)
        self._n_events = len(events)
        if self.checksum_every and scene.tick_count % self.checksum_every == 0 and rec is not None:
            rec.checksum(scene.tick_count - 1, scene.checksum())
        if self.mailbox is not None and scene.tick_count % self.publish_every == 0:
            self.mailbox.write(self.snapshot())
            self.published += 1

    def _record(self, rec, tick: int, now_ns: int, lateness_ns: int) -> None:
        scene = self.scene
        i = rec.next_row()
        fl = rec.fields
        fl["tick"][i] = tick
        fl["t"][i] = (now_ns - self.t0_ns) * 1e-9
        flags = fl["dev_flags"][i]
        for h, s in enumerate(self.samples):
            if s is None:
                flags[h] = 0
                continue
            fl["dev_t"][i, h] = s.t
            fl["dev_seq"][i, h] = s.seq
            fl["dev_pos"][i, h] = s.position
            fl["dev_grip"][i, h] = s.gripper
            fl["dev_buttons"][i, h] = s.buttons
            fl["dev_status"][i, h] = s.status
            fl["dev_force"][i, h] = s.force_applied
            flags[h] = int(s.fresh) | (int(s.connected) << 1)
        fl["targets"][i] = self.control.targets
        fl["jaws"][i] = self.control.jaws
        fl["force"][i] = self.force
        scene.read_tool_poses(fl["tool_pose"][i])
        fl["scope_pose"][i] = scene.scope.pose
        scene.scope.params(fl["scope"][i])
        fl["lateness_ns"][i] = lateness_ns

    # -- around the tick -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """`scene.snapshot()` plus hud, pub_ns, jaws, force_env and version (module docstring, 6)."""
        snap = self.scene.snapshot()
        hud = getattr(self.procedure, "hud", None)
        state = hud() if hud is not None else None
        if self.guide is not None:
            state = dict(state or {}, instructor=self.guide.read())
        encode_hud(state, self.hud)
        snap["hud"] = self.hud.copy()
        snap["pub_ns"] = np.array([time.perf_counter_ns()], np.int64)
        snap["jaws"] = self.control.jaws.copy()
        snap["force_env"] = self.force_env.copy()
        snap["version"] = np.array([SNAPSHOT_VERSION], np.int32)
        return snap

    def hold(self) -> None:
        """The tick of a paused session: read every device (drains its link), command zero force
        (keeps its watchdog fed), publish a snapshot every `publish_every` calls; no scene tick.
        On resume each tool glides to where its hand has moved meanwhile (as on a link coming up)."""
        for h, hand in enumerate(self.hands):
            self._link_up[h] = False
            dev = hand.device
            if dev is not None:
                dev.read()
                dev.write_force(self._zero)
        self.force[:] = 0.0
        self._held += 1
        if self.mailbox is not None and self._held % self.publish_every == 0:
            self.mailbox.write(self.snapshot())
            self.published += 1

    def publish(self) -> None:
        """Write a snapshot to the mailbox now (the first one, before the loop starts)."""
        if self.mailbox is not None:
            self.mailbox.write(self.snapshot())
            self.published += 1

    def finish_row(self, compute_ns: int) -> None:
        """Store the tick's compute time in its recorded row (after the caller measured it)."""
        rec = self.recorder
        if rec is not None and rec.n:
            rec.fields["compute_ns"][rec.n - 1] = compute_ns

    def zero_force(self) -> None:
        """Command zero force on every device now (shutdown, errors); never raises."""
        self.force[:] = 0.0
        zero_hands(self.hands)
