"""Keys and mouse from the session's window to its servo: the input mailbox, the keyboard device and
the scope keys.

The window (render process) is a display, not the clock: it only writes what the person does into
a small seqlock mailbox (`input_layout()`: which keys are held, how often each was pressed, the
accumulated mouse drags and wheel steps, the selected instrument), once per frame. The servo reads
it every tick:
- `WindowKeyboardDevice` (one per keyboard hand, `--device keyboard` or `keyboard,keyboard`) turns
  it into device samples: the hand's handle moves while W/S/A/D/Q/E are held and with left-drag
  and the wheel, Space toggles its jaws; with two keyboard hands, 1 and 2 pick which one the keys
  move. Samples go through the workspace map like any device's, so the recording and replay are
  as for a haptic device.
- `ScopeKeys` moves `scene.scope` (arrows pivot, PgUp/PgDn insert, Z/X roll, V 0/30 deg optics,
  right-drag pivots, R back to the start view), whatever drives the tools; the scope's pose is in
  the scene state, the snapshot (the window draws through it) and the recording.
Keys (docs/runtime.md): W/S away/toward, A/D left/right, Q/E down/up; Shift held: a quarter of the
step (fine moves, keys and mouse). A keyboard hand's tool glides into view (`READY`) at the start.
"""

from __future__ import annotations

import time

import numpy as np

from haptics.device import EXCHANGE_BUTTON, DeviceSample, DeviceSpec, HapticDevice

KEYS = ("w", "s", "a", "d", "q", "e", "space", "1", "2", "left", "right", "up", "down", "page_up",
        "page_down", "z", "x", "v", "r", "left_shift", "right_shift", "c")
K = {name: i for i, name in enumerate(KEYS)}
KEY_SPEED = 0.035  # handle speed while a key is held [m/s], device frame (~5 cm/s of tool at scale 1.5)
FINE = 0.25  # Shift held: keys and drags move this fraction as far (~1.3 cm/s of tool: placing a ring)
#: Where a keyboard hand's handle glides at the start [m] (device frame): its tool 9 cm forward of
#: its start tip and 1.5 cm up, in front of the scope and in view, over ~1 s (READY_SPEED).
READY = (0.0, 0.06, 0.01)
READY_SPEED = 0.07  # [m/s]
DRAG_M_PER_PX = 1.3e-4  # left-drag: handle motion per pixel [m]
SCROLL_M = 3.3e-3  # wheel: handle z per step [m]
JAW_OPEN = 0.8  # gripper angle while the jaws are toggled open [rad] (the map clips to each tool's)
SCOPE_SPEED = 0.6  # scope pivot rate while an arrow is held [rad/s]
SCOPE_INSERT_SPEED = 0.05  # [m/s]
SCOPE_DRAG_RAD_PER_PX = 0.003


def input_layout() -> dict:
    """The display -> servo mailbox (`sim.runtime.mailbox` layout). From the window: held (k,) 0/1
    per KEYS entry; presses (k,) press counts; drag (2,) accumulated left-drag (dx, dy) [px]; rdrag
    (2,) right-drag [px]; scroll (1,) accumulated wheel steps; selected (1,) the instrument 1/2
    picked (0-based). From the headset (`sim.render.xr_controllers`, hand 0 left, 1 right): xr_pose
    (2, 7) each controller's grip pose in the OpenXR LOCAL space [m, quaternion x y z w]; xr_valid
    (2,) 1 while that pose is tracked; xr_trigger (2,) trigger value in [0, 1]; xr_recenter (2,)
    presses of the recentre button (menu/squeeze)."""
    n = len(KEYS)
    return {"held": ((n,), "|u1"), "presses": ((n,), "<u4"), "drag": ((2,), "<f8"),
            "rdrag": ((2,), "<f8"), "scroll": ((1,), "<f8"), "selected": ((1,), "<i4"),
            "xr_pose": ((2, 7), "<f8"), "xr_valid": ((2,), "|u1"), "xr_trigger": ((2,), "<f8"),
            "xr_recenter": ((2,), "<u4")}


class InputState:
    """The window's side: what the person did so far, written to the mailbox once per frame."""

    def __init__(self, box) -> None:
        self.box = box
        self.data = box.empty()

    def key(self, name: str, down: bool) -> None:
        i = K.get(name)
        if i is None:
            return
        if down and not self.data["held"][i]:
            self.data["presses"][i] += 1
            if name in ("1", "2"):
                self.data["selected"][0] = int(name) - 1
        self.data["held"][i] = 1 if down else 0

    def drag(self, dx: float, dy: float, *, right: bool = False) -> None:
        self.data["rdrag" if right else "drag"] += (dx, dy)

    def scroll(self, steps: float) -> None:
        self.data["scroll"][0] += steps

    def publish(self) -> None:
        self.box.write(self.data)


class InputReader:
    """The servo's side of the mailbox: the newest input and what changed since the last look."""

    def __init__(self, box) -> None:
        self.box = box
        self.now = box.empty()
        self.prev = box.empty()

    def poll(self) -> bool:
        """Read the newest input (keep the previous one on a failed read); True if any was written."""
        self.prev, self.now = self.now, self.prev
        if self.box.read_into(self.now) is None:
            for name, arr in self.prev.items():
                self.now[name][...] = arr
            return False
        return True

    def delta(self, name: str) -> np.ndarray:
        return self.now[name] - self.prev[name]

    def start(self) -> None:
        """Read the newest input as the baseline: nothing counts as changed at the first delta
        (a device opened mid-session does not jump by what was pressed before it)."""
        self.poll()
        for name, arr in self.now.items():
            self.prev[name][...] = arr


class WindowKeyboardDevice(HapticDevice):
    """Hand `hand` on the window's keys and mouse (see the module docstring). No force output."""

    def __init__(self, box, hand: int = 0, *, keyboard_hands: int = 1) -> None:
        self.reader = InputReader(box)
        self.hand = hand
        self.shared = keyboard_hands > 1  # 1/2 pick which keyboard hand the keys move
        self._spec = DeviceSpec(name="window-keyboard", workspace=(0.1, 0.1, 0.1))
        self.pos = np.zeros(3)
        self.gripper = 0.0
        self._t_last: float | None = None
        self._seq = 0
        self._ready: np.ndarray | None = np.array(READY, float)

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        self._t_last = time.perf_counter()
        self.reader.start()

    def close(self) -> None:
        pass

    def read(self) -> DeviceSample:
        now = time.perf_counter()
        dt = 0.0 if self._t_last is None else min(now - self._t_last, 0.1)
        self._t_last = now
        r = self.reader
        r.poll()
        active = (not self.shared) or int(r.now["selected"][0]) == self.hand
        if self._ready is not None:  # the start glide into view
            step = self._ready - self.pos
            n = float(np.linalg.norm(step))
            if n <= READY_SPEED * dt:
                self.pos[:] = self._ready
                self._ready = None
            else:
                self.pos += step * (READY_SPEED * dt / n)
        if active:
            held = r.now["held"]
            fine = FINE if held[K["left_shift"]] or held[K["right_shift"]] else 1.0
            v = KEY_SPEED * dt * fine
            self.pos[0] += v * (int(held[K["d"]]) - int(held[K["a"]]))
            self.pos[1] += v * (int(held[K["w"]]) - int(held[K["s"]]))
            self.pos[2] += v * (int(held[K["e"]]) - int(held[K["q"]]))
            d = r.delta("drag") * fine
            self.pos[0] += DRAG_M_PER_PX * d[0]
            self.pos[1] -= DRAG_M_PER_PX * d[1]
            self.pos[2] += SCROLL_M * fine * r.delta("scroll")[0]
            if int(r.delta("presses")[K["space"]]) % 2:
                self.gripper = 0.0 if self.gripper > 0.0 else JAW_OPEN
        ws = np.asarray(self._spec.workspace)
        np.clip(self.pos, -ws, ws, out=self.pos)
        self._seq += 1
        # C held: the handle's exchange button (the step exchanges the instrument on the press)
        buttons = EXCHANGE_BUTTON if active and r.now["held"][K["c"]] else 0
        return DeviceSample(t=now, seq=self._seq, position=self.pos.copy(), gripper=self.gripper,
                            buttons=buttons, connected=True, fresh=True)

    def write_force(self, force, gripper: float = 0.0) -> None:
        pass  # no actuator


class ScopeKeys:
    """Moves `scene.scope` from the window's scope keys, once per tick (`SessionStep.scope_control`)."""

    def __init__(self, box) -> None:
        self.reader = InputReader(box)
        self.home: np.ndarray | None = None  # the scope's start params (R puts it back)

    def update(self, scene) -> None:
        r = self.reader
        if self.home is None:
            self.home = scene.scope.params().copy()
        if not r.poll():
            return
        if int(r.delta("presses")[K["r"]]):
            scene.scope.set_params(self.home)
            return
        held = r.now["held"]
        k = SCOPE_SPEED * scene.dt
        d = r.delta("rdrag")
        scope = scene.scope
        scope.pivot(d_yaw=k * (int(held[K["left"]]) - int(held[K["right"]])) - SCOPE_DRAG_RAD_PER_PX * d[0],
                    d_pitch=k * (int(held[K["down"]]) - int(held[K["up"]])) + SCOPE_DRAG_RAD_PER_PX * d[1],
                    d_insert=SCOPE_INSERT_SPEED * scene.dt * (int(held[K["page_up"]])
                                                              - int(held[K["page_down"]])),
                    d_roll=k * (int(held[K["x"]]) - int(held[K["z"]])))
        if int(r.delta("presses")[K["v"]]) % 2:
            scope.view_angle = 0.0 if scope.view_angle else float(np.radians(30.0))
