"""The HapticDevice interface and the devices that need no serial port (null, replay, keyboard).

Owns: DeviceSpec (limits a device reports), DeviceSample (one reading, device frame, SI units),
DeviceEvent (a reported problem), the HapticDevice lifecycle (open/read/write_force/close, context
manager that zeroes force), and three simple implementations. The serial driver (real hardware
and the emulator) is in haptics/serial_device.py.

Positions here are in the device frame [m] (counts / counts_per_m from INFO); mapping to the world
frame happens in the calibration layer (a later issue), still at the driver boundary.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from haptics.link_health import no_link_stats

#: In a session, a press of this button bit (button 1) exchanges the hand's instrument
#: (`sim.runtime.devices.WorkspaceMap.exchange`; the calibration wizard gives the buttons its own meanings).
EXCHANGE_BUTTON = 1

class DeviceError(Exception):
    """A device cannot be used (bad port, no answer, incompatible protocol). One-line message."""


@dataclass(frozen=True)
class DeviceSpec:
    """What a device can do. Built once from INFO; never changes while the device is open.

    max_force: largest force magnitude [N]; max_gripper_force [N]; max_stiffness: stable
    closed-loop stiffness at 1 kHz [N/m]; workspace: half extents of the reachable box [m],
    shape (3,); counts_per_m: encoder resolution [counts/m], shape (3,); gripper_counts_per_rad
    [counts/rad]; rate_hz: STATE stream rate [Hz]; watchdog_ms: device watchdog [ms].
    """

    name: str
    serial: str = ""
    protocol: tuple[int, int] = (1, 0)
    firmware: tuple[int, int, int] = (0, 0, 0)
    max_force: float = 0.0
    max_gripper_force: float = 0.0
    max_stiffness: float = 0.0
    workspace: tuple[float, float, float] = (0.1, 0.1, 0.1)
    counts_per_m: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gripper_counts_per_rad: float = 1.0
    rate_hz: int = 1000
    watchdog_ms: int = 0


@dataclass
class DeviceSample:
    """The newest reading of a device.

    t: host time the frame arrived [s] (time.perf_counter); t_device_us: device clock [us];
    seq: STATE sequence number; position: handle position, device frame [m], shape (3,);
    position_counts: raw encoder counts, shape (3,); gripper: jaw angle [rad]; buttons: bitfield;
    status: protocol STATUS_* bits; force_applied: force the device reports applying [N],
    shape (3,); connected: link healthy (STATE frames arriving); fresh: a new STATE arrived since
    the previous read(); error: the newest problem message, or None; roll: handle roll about the
    instrument axis relative to its start [rad], None for devices that do not sense it (the tool
    then keeps its home roll).
    """

    t: float = 0.0
    t_device_us: int = 0
    seq: int = 0
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    position_counts: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    gripper: float = 0.0
    buttons: int = 0
    status: int = 0
    force_applied: np.ndarray = field(default_factory=lambda: np.zeros(3))
    connected: bool = False
    fresh: bool = False
    error: str | None = None
    roll: float | None = None


@dataclass(frozen=True)
class DeviceEvent:
    """A problem or state change the host noticed. t: time.monotonic() [s]; kind: short tag."""

    t: float
    kind: str
    message: str


class HapticDevice(abc.ABC):
    """One force-feedback device. Use as a context manager so force is zeroed on every exit path.

    read() never blocks the tick and never raises after open(); problems are reported through
    DeviceSample.connected/error and `events`.
    """

    @property
    @abc.abstractmethod
    def spec(self) -> DeviceSpec:
        """Limits of the open device."""

    @abc.abstractmethod
    def open(self) -> None:
        """Connect. Raises DeviceError with one clear line if the device cannot be used."""

    @abc.abstractmethod
    def close(self) -> None:
        """Zero the force and release the device. Idempotent."""

    @abc.abstractmethod
    def read(self) -> DeviceSample:
        """The newest sample (drains everything received so far). Never blocks."""

    @abc.abstractmethod
    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        """Command force [N], shape (3,), device frame, and gripper force [N] for this tick."""

    def zero(self) -> None:
        """Command zero force now (safety paths)."""
        self.write_force((0.0, 0.0, 0.0), 0.0)

    def link_stats(self) -> dict:
        """Link health (keys and units in haptics.link_health); a device without a link (this
        default) reports zeros."""
        return no_link_stats("nothing to calibrate")

    def __enter__(self) -> HapticDevice:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullDevice(HapticDevice):
    """A do-nothing device: a handle at a fixed point that ignores force (no hardware found)."""

    def __init__(self, position: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        self._position = np.asarray(position, dtype=float).reshape(3)
        self._spec = DeviceSpec(name="null", rate_hz=1000)
        self._open = False
        self.last_force = np.zeros(3)
        self.events: list[DeviceEvent] = []

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self.last_force[:] = 0.0
        self._open = False

    def read(self) -> DeviceSample:
        return DeviceSample(t=time.perf_counter(), position=self._position.copy(),
                            connected=self._open, fresh=self._open)

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        # Accepted and dropped: there is no actuator; kept only so tests can see the last command.
        self.last_force[:] = np.asarray(force, dtype=float).reshape(3)


class ScriptedHand(HapticDevice):
    """A device whose handle is moved by a program (a scripted policy, a gymnasium action, a
    random walk) instead of a hand: the base of every scripted hand.

    A subclass sets `position` (device frame [m], (3,)), `gripper` [rad] and, if the program turns
    the instrument, `roll` [rad] (relative to home; None: the hand keeps the home roll), either in
    `observe(scene, wmap)` (the session step calls it before `read()`, so the program may look at
    the world) or in `advance()` (called by every `read()`). `read()` reports them as a fresh,
    connected sample; `write_force` keeps the commanded force in `last_force` [N] (3,), which is
    what the hand "feels" and what tests and metrics read. Nothing to open; `close()` zeroes it.
    """

    def __init__(self, name: str, max_force: float = 10.0, max_stiffness: float = 2000.0) -> None:
        self._spec = DeviceSpec(name=name, max_force=max_force, max_stiffness=max_stiffness)
        self.position = np.zeros(3)
        self.gripper = 0.0
        self.roll: float | None = None
        self.last_force = np.zeros(3)
        self._seq = 0

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.last_force[:] = 0.0

    def advance(self) -> None:
        """Move the handle for this read (default: it stays where observe() put it)."""

    def read(self) -> DeviceSample:
        self.advance()
        self._seq += 1
        return DeviceSample(t=time.perf_counter(), seq=self._seq, position=self.position.copy(),
                            gripper=float(self.gripper), connected=True, fresh=True, roll=self.roll)

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        self.last_force[:] = np.asarray(force, dtype=float).reshape(3)


class ReplayDevice(HapticDevice):
    """Plays back recorded samples, one per read() (lockstep; deterministic), then holds the last.

    Recording format (.npz): t [s] (N,), position [m] (N, 3), gripper [rad] (N,), buttons (N,).
    """

    def __init__(self, t: np.ndarray, position: np.ndarray, gripper: np.ndarray | None = None,
                 buttons: np.ndarray | None = None) -> None:
        self._t = np.asarray(t, dtype=float)
        self._pos = np.asarray(position, dtype=float).reshape(-1, 3)
        n = len(self._t)
        if len(self._pos) != n or n == 0:
            raise DeviceError(f"replay: {n} times but {len(self._pos)} positions")
        self._grip = np.zeros(n) if gripper is None else np.asarray(gripper, dtype=float)
        self._buttons = np.zeros(n, np.int64) if buttons is None else np.asarray(buttons)
        self._i = 0
        self._spec = DeviceSpec(name="replay")
        self.forces: list[np.ndarray] = []

    @classmethod
    def load(cls, path: str) -> ReplayDevice:
        """Read a recording written by `save`."""
        try:
            z = np.load(path)
            return cls(z["t"], z["position"], z["gripper"], z["buttons"])
        except (OSError, KeyError, ValueError) as exc:
            raise DeviceError(f"replay: cannot read recording {path}: {exc}") from None

    @staticmethod
    def save(path: str, samples: Sequence[DeviceSample]) -> None:
        """Write samples as a recording (.npz)."""
        np.savez(path, t=np.array([s.t for s in samples]),
                 position=np.array([s.position for s in samples]).reshape(-1, 3),
                 gripper=np.array([s.gripper for s in samples]),
                 buttons=np.array([s.buttons for s in samples], dtype=np.int64))

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        self._i = 0

    def close(self) -> None:
        pass

    def read(self) -> DeviceSample:
        i = min(self._i, len(self._t) - 1)
        fresh = self._i < len(self._t)
        self._i += 1
        return DeviceSample(t=float(self._t[i]), seq=i, position=self._pos[i].copy(),
                            gripper=float(self._grip[i]), buttons=int(self._buttons[i]),
                            connected=True, fresh=fresh)

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        self.forces.append(np.asarray(force, dtype=float).reshape(3).copy())


class KeyboardMouseDevice(HapticDevice):
    """Desktop stand-in: keys move the handle at a fixed speed, mouse drags move it directly.

    No force output. The window layer calls key()/mouse_move()/scroll(); read() integrates.
    Keys: a/d -x/+x, s/w -y/+y, f/r -z/+z, space = button 1, g = close gripper.
    """

    _AXES = {"a": (0, -1), "d": (0, 1), "s": (1, -1), "w": (1, 1), "f": (2, -1), "r": (2, 1)}

    def __init__(self, speed: float = 0.05, mouse_scale: float = 1e-4,
                 workspace: tuple[float, float, float] = (0.1, 0.1, 0.1)) -> None:
        self.speed = speed  # [m/s] while a key is held
        self.mouse_scale = mouse_scale  # [m/pixel]
        self._spec = DeviceSpec(name="keyboard", workspace=workspace)
        self._pos = np.zeros(3)
        self._held: set[str] = set()
        self._t_last: float | None = None
        self._gripper = 0.0

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        self._t_last = time.perf_counter()

    def close(self) -> None:
        self._held.clear()

    def key(self, name: str, down: bool) -> None:
        """A key went down or up."""
        (self._held.add if down else self._held.discard)(name)

    def mouse_move(self, dx: float, dy: float) -> None:
        """Relative mouse motion [pixels] while dragging: moves x/y."""
        self._pos[0] += dx * self.mouse_scale
        self._pos[1] -= dy * self.mouse_scale

    def scroll(self, dz: float) -> None:
        """Wheel steps: move z by 1 mm per step."""
        self._pos[2] += dz * 1e-3

    def read(self) -> DeviceSample:
        now = time.perf_counter()
        dt = 0.0 if self._t_last is None else now - self._t_last
        self._t_last = now
        for k in self._held:
            ax = self._AXES.get(k)
            if ax is not None:
                self._pos[ax[0]] += ax[1] * self.speed * dt
        ws = np.asarray(self._spec.workspace)
        np.clip(self._pos, -ws, ws, out=self._pos)
        self._gripper = 0.0 if "g" in self._held else 0.5
        buttons = 1 if " " in self._held else 0
        return DeviceSample(t=now, position=self._pos.copy(), gripper=self._gripper,
                            buttons=buttons, connected=True, fresh=True)

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        pass  # no actuator
