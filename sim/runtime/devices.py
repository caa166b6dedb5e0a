"""The `--device` selection string, the emulator processes a session owns, and the workspace map.

`--device` takes one device string per hand, comma separated: ``emu`` drives tool 0 (one hand);
``emu,emu`` drives tool 0 with the first and tool 1 with the second (bimanual: each hand feels only
its own tool's force). `--left SPEC --right SPEC` is the same as ``--device LEFT,RIGHT``.

Device strings:
- ``emu``: start the pty device emulator (`haptics.emulator`) as its own process and talk to it
  through `haptics.serial_device.SerialDevice`; the session owns the emulator's lifetime.
- ``serial:PORT``: a trocar-protocol device on PORT (a path or a pyserial URL); wrapped in its
  stored calibration profile when `haptics.profile.open_with_profile` exists.
- ``keyboard``: `KeyboardMouseDevice` (no force output).
- ``replay:FILE``: `ReplayDevice` from a device .npz, or the device samples of a trocar session
  recording (one sample per tick).
- ``null``: `NullDevice` (a handle at the workspace centre).
- ``script``: the renderer's tool script played through the device path (`sim.render.script.ScriptHand`).
- ``xr``: a VR controller of the headset (`sim.runtime.xr_device`; hand 0 the left controller,
  hand 1 the right); needs `--display xr`.

Workspace map (device frame -> world, at the runtime boundary): hand h drives tool h; tools
without a hand hold their start pose. For the driven tool,

    target_xyz = home_xyz + scale * p_device,   target_roll = home_roll,
    jaw = clip(gripper, 0, jaw_open_max)

home = the tool's tip at session start [m] (world), p_device = handle position [m] (device
frame; device axes are taken as world axes: x right, y away from the user, z up), scale = 1.5 by
default, so the emulator's +-0.08 m workspace reaches +-0.12 m around the start tip (the tissue
pad from the left port). The device force is the negative coupling force on the driven tool's
proxy, in world axes = device axes, not scaled (with scale s the hand feels the coupling
stiffness times s: 500 N/m x 1.5 = 750 N/m, under the emulator's 2000 N/m stable limit).
Until the first STATE arrives (or while the link is down) the driven tool holds its last target.
When the link comes up (`WorkspaceMap.connect`) the target glides from where it held to the hand
over GLIDE_S along a minimum-jerk path instead of jumping: a 45 mm jump in one 1 ms tick would put
hundreds of newtons of coupling damping on the tool, into the hand and into the force metrics.

Instrument exchange: a scene may have more instruments than there are devices (the
cholecystectomy: grasper, clip applier and scissors for two hands). The last hand then holds the
extra ones too (`WorkspaceMap.instruments`, e.g. right hand: applier then scissors), and
`EXCHANGE_BUTTON` on its handle (button 1; the window's X key) exchanges them in turn, as a
surgeon hands one instrument back and takes the next through a port: the one given back glides
to its start pose (withdrawn) over GLIDE_S, the one taken glides from where it waits to the hand.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

from haptics.emulated_device import stop_process
from sim.errors import UserError

DEVICE_KINDS = ("emu", "serial:PORT", "keyboard", "replay:FILE", "null", "script", "xr")
MAX_HANDS = 2
DEFAULT_SCALE = 1.5
#: Emulator hand used by `--device emu`: circles (radius 2 cm, 4 s) 2 cm below the workspace
#: centre, so the grasper sweeps just over the tissue surface and the loop does real work.
EMU_DEFAULT_ARGS = ("--hand", "circle", "--hand-radius", "0.02", "--hand-period", "4",
                    "--hand-at", "0.03,0.06,-0.02")
#: The same for the second hand, mirrored in x (the right tool comes from the right port).
EMU_DEFAULT_ARGS_RIGHT = ("--hand", "circle", "--hand-radius", "0.02", "--hand-period", "4",
                          "--hand-at=-0.03,0.06,-0.02")  # '=': argparse takes a leading '-' for an option
GLIDE_S = 1.0  # [s] the tool's glide to the hand when a device link comes up (45 mm: peak 0.08 m/s)
GLIDE_MIN_GAP = 1e-3  # [m] a smaller gap between the held target and the hand is taken at once


def min_jerk(u: float) -> float:
    """The minimum-jerk blend 10u^3 - 15u^4 + 6u^5 at u in [0, 1]: 0 -> 1 with zero speed and
    acceleration at both ends."""
    return u * u * u * (10.0 - 15.0 * u + 6.0 * u * u)


@dataclass(frozen=True)
class DeviceChoice:
    """A parsed device string: kind in (emu, serial, keyboard, replay, null) and its argument."""

    kind: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def parse_device(text: str) -> DeviceChoice:
    """Parse `--device`; UserError (one line) on anything else."""
    kind, sep, arg = text.partition(":")
    if kind in ("emu", "keyboard", "null", "script", "xr") and not sep:
        return DeviceChoice(kind)
    if kind in ("serial", "replay") and sep and arg:
        if kind == "replay" and not os.path.isfile(arg):
            raise UserError(f"--device replay: no such file: {arg}")
        if kind == "serial" and "://" not in arg and not os.path.exists(arg):
            raise UserError(f"--device serial: no such port: {arg}")
        return DeviceChoice(kind, arg)
    raise UserError(f"bad --device {text!r}; expected one of {', '.join(DEVICE_KINDS)}")


def parse_devices(text: str) -> list[DeviceChoice]:
    """Parse a per-hand device list 'A' or 'A,B' (hand h drives tool h); UserError on bad input."""
    parts = text.split(",")
    if len(parts) > MAX_HANDS:
        raise UserError(f"--device {text!r}: at most {MAX_HANDS} devices (one per hand)")
    return [parse_device(p.strip()) for p in parts]


def emu_event_log_for(path: str | None, hand: int) -> str | None:
    """The event log of hand `hand`'s emulator: `path` for hand 0, `path.H` for hand H > 0."""
    if path is None:
        return None
    return path if hand == 0 else f"{path}.{hand}"


def start_emulators(choices: list[DeviceChoice], *, emu_args: tuple = (), hand_emu_args: tuple = (),
                    event_log: str | None = None, link_dir: str | None = None,
                    cpus: set[int] | None = None) -> tuple[list[DeviceChoice], list[EmulatorProcess]]:
    """Start one emulator process per 'emu' choice; returns the choices with every 'emu' resolved to
    its serial port, and the emulators (the caller stops them). emu_args: options for every
    emulator; hand_emu_args[h]: options for hand h's only (after the defaults, so they win)."""
    out: list[DeviceChoice] = []
    emus: list[EmulatorProcess] = []
    try:
        for h, choice in enumerate(choices):
            if choice.kind != "emu":
                out.append(choice)
                continue
            defaults = EMU_DEFAULT_ARGS if h == 0 else EMU_DEFAULT_ARGS_RIGHT
            extra = tuple(hand_emu_args[h]) if h < len(hand_emu_args) else ()
            link = os.path.join(link_dir, f"dev{h}") if link_dir else None
            emu = EmulatorProcess(*defaults, *emu_args, *extra, link=link,
                                  event_log=emu_event_log_for(event_log, h))
            emus.append(emu)
            if cpus:
                try:
                    os.sched_setaffinity(emu.pid, cpus)
                except OSError:
                    pass
            out.append(DeviceChoice("serial", emu.path))
    except BaseException:
        for emu in emus:
            emu.stop()
        raise
    return out, emus


class EmulatorProcess:
    """A `haptics.emulator` process behind a pty, owned by the session (started, stopped here).

    args: emulator options; link: stable symlink to the pty. `path` is what a SerialDevice opens.
    """

    def __init__(self, *args: str, link: str | None = None, event_log: str | None = None,
                 startup_timeout_s: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "haptics.emulator", "--exit-with-parent", *args]
        if link:
            cmd += ["--link", link]
        if event_log:
            cmd += ["--event-log", event_log]
        # Own session: a terminal's Ctrl-C goes to the session's processes, and the emulator (the
        # "device") must outlive the servo's shutdown, like hardware would.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        r, _, _ = select.select([self.proc.stdout], [], [], startup_timeout_s)
        line = self.proc.stdout.readline().decode().strip() if r else ""
        if not line:
            self.stop()
            raise UserError(f"device emulator did not start within {startup_timeout_s:g} s")
        self.path = link or line
        self.pid = self.proc.pid

    def stop(self) -> None:
        """Terminate and reap the emulator. Idempotent."""
        proc, self.proc = self.proc, None
        stop_process(proc)


def serial_driver(dev):
    """The SerialDevice under a (possibly calibration-wrapped) device, or None."""
    for d in (dev, getattr(dev, "device", None)):
        if d is not None and hasattr(d, "rtt_percentiles"):
            return d
    return None


def replay_device_from(path: str, hand: int = 0):
    """A ReplayDevice from a device .npz or from a session recording's device samples of `hand`."""
    from haptics.device import ReplayDevice
    from sim.runtime import recording

    if recording.is_recording(path):
        rec = recording.read_recording(path)
        t = rec.ticks
        if len(t) == 0:
            raise UserError(f"--device replay: {path} holds no ticks")
        h = min(hand, t["dev_t"].shape[1] - 1)
        return ReplayDevice(t["dev_t"][:, h], t["dev_pos"][:, h], t["dev_grip"][:, h],
                            t["dev_buttons"][:, h])
    return ReplayDevice.load(path)


def open_device(choice: DeviceChoice, *, soft_start_s: float = 2.0, state_timeout_s: float = 0.05,
                hand: int = 0, inputs=None, keyboard_hands: int = 1):
    """Open the device for `choice` (kind 'emu' must already be resolved to a serial port) as hand
    `hand`. inputs: the session window's input mailbox (`sim.runtime.keyboard`): 'keyboard' then
    reads the window's keys; without it 'keyboard' is `KeyboardMouseDevice` (no window to listen to).

    Raises UserError with one line if the device cannot be used.
    """
    from haptics.device import DeviceError, KeyboardMouseDevice, NullDevice

    try:
        if choice.kind == "serial":
            from haptics.serial_device import SerialDevice

            dev = SerialDevice(choice.arg, ramp_s=soft_start_s, state_timeout_s=state_timeout_s)
            try:
                import haptics.profile as profile

                wrap = getattr(profile, "open_with_profile", None)
            except ImportError:
                wrap = None
            if wrap is not None:
                return wrap(dev)  # opens it (calibrated, or uncalibrated-but-safe)
        elif choice.kind == "keyboard" and inputs is not None:
            from sim.runtime.keyboard import WindowKeyboardDevice

            dev = WindowKeyboardDevice(inputs, hand, keyboard_hands=keyboard_hands)
        elif choice.kind == "keyboard":
            dev = KeyboardMouseDevice()
        elif choice.kind == "xr":
            if inputs is None:
                raise UserError("--device xr needs the session's input mailbox (trocar run --display xr)")
            from sim.runtime.xr_device import XrControllerDevice

            dev = XrControllerDevice(inputs, hand)
        elif choice.kind == "replay":
            dev = replay_device_from(choice.arg, hand)
        elif choice.kind == "null":
            dev = NullDevice()
        elif choice.kind == "script":
            from sim.render.script import ScriptHand

            dev = ScriptHand()
        else:
            raise UserError(f"device {choice} must be started by the session")
        dev.open()
        return dev
    except DeviceError as exc:
        raise UserError(str(exc)) from None


@dataclass
class WorkspaceMap:
    """Device frame -> world tool target for one driven tool (see the module docstring).

    home: start target of every tool (n_tools, 4) [m, m, m, rad]; jaw_max: per tool jaw limit
    [rad], shape (n_tools,); tool: the driven tool; scale: position scale [-]; instruments: the
    tools this hand exchanges in turn (`exchange`), the driven one among them; () = just `tool`.
    """

    home: np.ndarray
    jaw_max: np.ndarray
    tool: int = 0
    scale: float = DEFAULT_SCALE
    instruments: tuple[int, ...] = ()
    # the glide after `connect` (device-side state, not the scene's: the targets it writes are recorded)
    _glide_from: np.ndarray = field(default_factory=lambda: np.zeros(3), repr=False)
    _glide_ticks: int = field(default=0, repr=False)
    _glide_left: int = field(default=0, repr=False)
    # the withdrawal of the instrument last handed back (`exchange`): tool, from, ticks, left
    _back_tool: int = field(default=-1, repr=False)
    _back_from: np.ndarray = field(default_factory=lambda: np.zeros(3), repr=False)
    _back_ticks: int = field(default=0, repr=False)
    _back_left: int = field(default=0, repr=False)

    @classmethod
    def for_scene(cls, scene, *, tool: int = 0, scale: float = DEFAULT_SCALE,
                  hands: int | None = None) -> WorkspaceMap:
        """The map of the hand driving `tool`; with `hands` (the session's number of hands) the
        last hand also holds the tools no hand drives (tools hands..n_tools-1), to exchange."""
        hold = scene.hold_control()
        jaw_max = np.array([t.spec.jaw_open_max for t in scene.tools], dtype=float)
        extra = tuple(range(hands, scene.n_tools)) if hands is not None and tool == hands - 1 else ()
        return cls(hold.targets.copy(), jaw_max, tool, scale, (tool, *extra) if extra else ())

    def exchange(self, position: np.ndarray, targets: np.ndarray, dt: float) -> int:
        """Hand the driven instrument back and take the next of `instruments` (the handle at
        position [m]; targets (n_tools, 4) as in `connect`; ticks of dt [s]): the one handed back
        glides to its start pose, the new one from where it waits to the hand. Returns the tool
        now driven (unchanged when the hand holds one instrument)."""
        if len(self.instruments) < 2:
            return self.tool
        old = self.tool
        self.tool = self.instruments[(self.instruments.index(old) + 1) % len(self.instruments)]
        self._back_tool = old  # (a withdrawal still running for self.tool is dropped: it is driven now)
        self._back_from[:] = targets[old, :3]
        self._back_ticks = self._back_left = max(1, int(round(GLIDE_S / dt)))
        self.connect(position, targets, dt)
        return self.tool

    def inverse(self, target_xyz: np.ndarray) -> np.ndarray:
        """The device position [m] (3,) that puts the driven tool's target at target_xyz [m] (world);
        apply(inverse(x), ...) writes x back (up to rounding). Scripted policies aim through this."""
        h = self.home[self.tool]
        return (np.asarray(target_xyz, dtype=float)[:3] - h[:3]) / self.scale

    def connect(self, position: np.ndarray, targets: np.ndarray, dt: float) -> None:
        """The device link came up (first sample, or a reconnect) with the handle at position [m]:
        the next apply() calls glide the driven tool's target from where it holds (targets[tool],
        (n_tools, 4)) to the hand over GLIDE_S (ticks of dt [s]), unless it is within GLIDE_MIN_GAP."""
        i = self.tool
        h = self.home[i]
        hand = h[:3] + self.scale * np.asarray(position, dtype=float)
        gap = np.asarray(targets[i, :3], dtype=float) - hand
        self._glide_left = 0
        if float(np.linalg.norm(gap)) > GLIDE_MIN_GAP:
            self._glide_from[:] = targets[i, :3]
            self._glide_ticks = self._glide_left = max(1, int(round(GLIDE_S / dt)))

    def apply(self, position: np.ndarray, gripper: float, targets: np.ndarray,
              jaws: np.ndarray, roll: float | None = None) -> None:
        """Write the driven tool's target and jaw from a device position [m] and gripper [rad];
        roll [rad] (relative to home) if the device senses it."""
        i = self.tool
        h = self.home[i]
        s = self.scale
        targets[i, 0] = h[0] + s * position[0]
        targets[i, 1] = h[1] + s * position[1]
        targets[i, 2] = h[2] + s * position[2]
        targets[i, 3] = h[3] if roll is None else h[3] + roll
        jaws[i] = min(max(gripper, 0.0), self.jaw_max[i])
        if self._glide_left > 0:  # minimum-jerk blend from the held target to the hand
            self._glide_left -= 1
            b = min_jerk(1.0 - self._glide_left / self._glide_ticks)
            g = self._glide_from
            for k in range(3):
                targets[i, k] = g[k] + b * (targets[i, k] - g[k])
        if self._back_left > 0:  # the instrument handed back withdraws to its start pose
            self._back_left -= 1
            b = min_jerk(1.0 - self._back_left / self._back_ticks)
            j, g = self._back_tool, self._back_from
            for k in range(3):
                targets[j, k] = g[k] + b * (self.home[j, k] - g[k])

    def describe(self) -> dict:
        return {"tool": self.tool, "scale": self.scale, "instruments": list(self.instruments or (self.tool,)),
                "home": self.home.tolist(), "jaw_max": self.jaw_max.tolist()}
