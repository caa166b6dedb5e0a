"""The device emulator's settings: `EmulatorConfig` (every knob, with units) and the command line
that fills it (`add_arguments`, `config_from_args`; bad values raise `EmulatorArgError`, one line).

The emulator itself (the device side of the protocol, the hand models, fault injection) is
`haptics.emulator`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from haptics import protocol as P

HANDS = ("spring", "still", "circle", "script", "free", "grip")


@dataclass
class EmulatorConfig:
    """All emulator settings. Lengths [m], forces [N], times [s] unless the name says ms."""

    rate_hz: int = 1000
    watchdog_ms: int = 100
    max_force: float = 5.0
    max_gripper_force: float = 2.0
    max_stiffness: float = 2000.0
    workspace: tuple[float, float, float] = (0.08, 0.08, 0.08)
    counts_per_m: tuple[float, float, float] = (1e5, 1e5, 1e5)  # 10 um per count
    gripper_counts_per_rad: float = 2000.0
    serial: str = "EMU-0001"
    firmware: tuple[int, int, int] = (1, 0, 0)
    protocol: tuple[int, int] = (P.PROTOCOL_MAJOR, P.PROTOCOL_MINOR)
    homed: bool = True
    # hand model: spring (hand holds the handle at hand_at with a spring), still, circle, or
    # script:FILE (rows "t x y z [gripper [buttons]]", linear interpolation, holds the last row)
    hand: str = "spring"
    hand_at: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hand_stiffness: float = 200.0  # [N/m]
    hand_mass: float = 0.1  # handle + hand [kg]; damping is critical
    hand_radius: float = 0.02  # circle radius [m]
    hand_period: float = 2.0  # circle period [s]
    # physical hands: free (nobody holds the handle) and grip (a hand holds it, pushing to grip_at)
    handle_mass: float = 0.08  # moving mass of the mechanism at the handle [kg]
    device_damping: float = 2.0  # viscous friction of the mechanism [N s/m]
    grip_mass: float = 0.1  # the gripping hand's mass [kg]
    grip_damping: float = 3.0  # the gripping hand's damping [N s/m]
    grip_stiffness: float = 200.0  # the gripping hand's stiffness [N/m]
    grip_at: tuple[float, float, float] = (0.01, 0.0, 0.0)  # where the hand pushes to [m]
    # gravity (arm-weight model, see holding_force); zero masses: no gravity
    gravity_mass: float = 0.0  # handle mass hanging at the tip [kg]
    arm_mass: float = 0.0  # arm mass, a uniform rod from the shoulder to the handle [kg]
    arm_shoulder: tuple[float, float, float] = (0.0, -0.15, -0.10)  # arm pivot [m]
    tilt: tuple[float, float] = (0.0, 0.0)  # base tilt about x, then y [rad]
    sync_ticks: int = 0  # apply FORCE this many ticks after the STATE it answers (0: on arrival)
    # with sync_ticks: hold each tick up to this long [ms] until the host has answered the STATE
    # before it (0: never wait); see Emulator.host_behind
    sync_wait_ms: float = 0.0
    # miscalibration
    encoder_offset: tuple[int, int, int] = (0, 0, 0)  # [counts]
    gain_error: tuple[float, float, float] = (0.0, 0.0, 0.0)  # relative
    axis_sign: tuple[int, int, int] = (1, 1, 1)
    force_constant_error: tuple[float, float, float] = (0.0, 0.0, 0.0)  # relative
    latency_ms: int = 0  # sensing and actuation delay
    # fault injection (times are seconds after the first frame from the host)
    drop_bytes: float = 0.0  # probability per outgoing byte
    drop_rx_bytes: float = 0.0  # probability per incoming byte (host -> device loss)
    flip_bits: float = 0.0  # probability per outgoing byte of one flipped bit
    duplicate: float = 0.0  # probability per outgoing frame
    truncate: float = 0.0  # probability per outgoing frame (tail and delimiter lost)
    stall_ms: int = 0  # freeze the whole device (no I/O, no watchdog) for this long
    stall_at: float = 1.0
    stop_replying_at: float | None = None  # stop sending (still reads, watchdog still runs)
    unplug_at: float | None = None  # close the pty master
    replug_after: float | None = None  # open a new pty (same --link) this long after unplug
    garbage_at_open: int = 0  # random non-zero bytes sent when a host connects
    lose_info: int = 0  # corrupt the first N INFO frames after each pty open (ACK still goes)
    seed: int = 0
    # process
    link: str | None = None
    duration: float | None = None
    event_log: str | None = None
    exit_with_parent: bool = False
    fifo: int = 0  # ask for SCHED_FIFO at this priority (0: no)
    script: list[tuple[float, ...]] = field(default_factory=list)


def _floats(n: int):
    def parse(s: str) -> tuple[float, ...]:
        parts = s.split(",")
        if len(parts) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {s!r}")
        try:
            return tuple(float(x) for x in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not numbers: {s!r}") from None
    return parse


def _version(s: str) -> tuple[int, int]:
    try:
        a, b = s.split(".")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR, got {s!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `trocar device emulate` options."""
    d = EmulatorConfig()
    p.add_argument("--link", help="also create this symlink to the pty (stable path)")
    p.add_argument("--serial", default=d.serial, help="serial number in INFO")
    p.add_argument("--rate", type=int, default=d.rate_hz, help="STATE rate [Hz] (default %(default)s)")
    p.add_argument("--watchdog-ms", type=int, default=d.watchdog_ms,
                   help="device watchdog until the host sets one [ms] (default %(default)s)")
    p.add_argument("--max-force", type=float, default=d.max_force, help="motor limit [N]")
    p.add_argument("--protocol-version", type=_version, default=d.protocol,
                   help="protocol version to announce in INFO (tests of negotiation)")
    p.add_argument("--unhomed", action="store_true", help="start not homed (ENABLE refused)")
    p.add_argument("--hand", default=d.hand,
                   help="hand model: spring, still, circle, free, grip, or script:FILE (default %(default)s)")
    p.add_argument("--hand-at", type=_floats(3), default=d.hand_at,
                   help="where the hand holds the handle x,y,z [m]")
    p.add_argument("--hand-stiffness", type=float, default=d.hand_stiffness,
                   help="hand spring [N/m] (default %(default)s)")
    p.add_argument("--hand-radius", type=float, default=d.hand_radius, help="circle radius [m]")
    p.add_argument("--hand-period", type=float, default=d.hand_period, help="circle period [s]")
    h = p.add_argument_group("physical hands (free, grip) and gravity")
    h.add_argument("--handle-mass", type=float, default=d.handle_mass,
                   help="moving mass of the mechanism [kg] (default %(default)s)")
    h.add_argument("--device-damping", type=float, default=d.device_damping,
                   help="viscous friction of the mechanism [N s/m] (default %(default)s)")
    h.add_argument("--grip-mass", type=float, default=d.grip_mass,
                   help="hand mass [kg] (default %(default)s)")
    h.add_argument("--grip-damping", type=float, default=d.grip_damping,
                   help="hand damping [N s/m] (default %(default)s)")
    h.add_argument("--grip-stiffness", type=float, default=d.grip_stiffness,
                   help="hand stiffness [N/m] (default %(default)s)")
    h.add_argument("--grip-at", type=_floats(3), default=d.grip_at,
                   help="where the gripping hand pushes to x,y,z [m] (default %(default)s)")
    h.add_argument("--gravity-mass", type=float, default=d.gravity_mass,
                   help="handle mass at the tip for gravity [kg] (default %(default)s)")
    h.add_argument("--arm-mass", type=float, default=d.arm_mass,
                   help="arm (uniform rod) mass for gravity [kg] (default %(default)s)")
    h.add_argument("--arm-shoulder", type=_floats(3), default=d.arm_shoulder,
                   help="arm pivot x,y,z [m] (default %(default)s)")
    h.add_argument("--tilt", type=_floats(2), default=d.tilt,
                   help="base tilt about x, then y [rad] (default %(default)s)")
    h.add_argument("--sync-wait-ms", type=float, default=d.sync_wait_ms,
                   help="with --sync-ticks: hold each tick up to this long until the host has "
                   "answered the STATE before it (0: never)")
    h.add_argument("--sync-ticks", type=int, default=d.sync_ticks,
                   help="apply each FORCE this many ticks after the STATE it answers (a fixed "
                        "loop delay whatever the host's jitter; default 0: on arrival)")
    g = p.add_argument_group("miscalibration")
    g.add_argument("--encoder-offset", type=_floats(3), default=(0, 0, 0), help="counts x,y,z")
    g.add_argument("--gain-error", type=_floats(3), default=d.gain_error,
                   help="relative encoder gain error x,y,z")
    g.add_argument("--axis-sign", type=_floats(3), default=(1, 1, 1), help="+1/-1 per axis")
    g.add_argument("--force-constant-error", type=_floats(3), default=d.force_constant_error,
                   help="relative motor force constant error x,y,z")
    g.add_argument("--latency-ms", type=int, default=0, help="sensing+actuation delay [ms]")
    f = p.add_argument_group("fault injection (times after the host's first frame)")
    f.add_argument("--drop-bytes", type=float, default=0.0, help="probability per byte")
    f.add_argument("--drop-rx-bytes", type=float, default=0.0,
                   help="probability per byte received from the host")
    f.add_argument("--flip-bits", type=float, default=0.0, help="probability per byte")
    f.add_argument("--duplicate", type=float, default=0.0, help="probability per frame")
    f.add_argument("--truncate", type=float, default=0.0, help="probability per frame")
    f.add_argument("--stall-ms", type=int, default=0, help="freeze the device this long [ms]")
    f.add_argument("--stall-at", type=float, default=1.0, help="when to stall [s]")
    f.add_argument("--stop-replying-at", type=float, help="stop sending at [s]")
    f.add_argument("--unplug-at", type=float, help="close the pty master at [s]")
    f.add_argument("--replug-after", type=float, help="new pty (same --link) after [s]")
    f.add_argument("--garbage-at-open", type=int, default=0,
                   help="random bytes sent when a host connects")
    f.add_argument("--lose-info", type=int, default=0,
                   help="corrupt the first N INFO frames after each (re)plug (ACK still sent)")
    f.add_argument("--seed", type=int, default=0, help="fault RNG seed")
    p.add_argument("--duration", type=float, help="exit after this many seconds")
    p.add_argument("--fifo", type=int, default=0, metavar="PRIORITY",
                   help="run SCHED_FIFO at this priority when permitted (a device's own clock)")
    p.add_argument("--event-log", help="append device events (monotonic time) to this file")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process goes away")


class EmulatorArgError(ValueError):
    """Bad emulator option; one line."""


def config_from_args(a: argparse.Namespace) -> EmulatorConfig:
    """Validate options into an EmulatorConfig (EmulatorArgError on bad values)."""
    for name in ("drop_bytes", "drop_rx_bytes", "flip_bits", "duplicate", "truncate"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            raise EmulatorArgError(f"--{name.replace('_', '-')} must be a probability in [0, 1]")
    if not 100 <= a.rate <= 2000:
        raise EmulatorArgError("--rate must be in 100..2000 Hz")
    if any(s not in (1.0, -1.0) for s in a.axis_sign):
        raise EmulatorArgError("--axis-sign takes +1 or -1 per axis")
    hand, script = a.hand, []
    if hand.startswith("script:"):
        fname = hand.split(":", 1)[1]
        try:
            with open(fname) as fh:
                for ln, line in enumerate(fh, 1):
                    line = line.split("#")[0].strip()
                    if line:
                        row = tuple(float(x) for x in line.split())
                        if not 4 <= len(row) <= 6:
                            raise EmulatorArgError(
                                f"{fname}:{ln}: expected 't x y z [gripper [buttons]]'")
                        script.append(row)
        except OSError as exc:
            raise EmulatorArgError(f"cannot read hand script: {exc}") from None
        except ValueError:
            raise EmulatorArgError(f"{fname}: rows must be numbers") from None
        if not script:
            raise EmulatorArgError(f"{fname}: empty hand script")
        hand = "script"
    elif hand not in HANDS or hand == "script":
        raise EmulatorArgError(f"unknown --hand {hand!r}: spring, still, circle, free, grip or "
                               f"script:FILE")
    if min(a.handle_mass, a.grip_mass) <= 0 or min(a.device_damping, a.grip_damping,
                                                   a.grip_stiffness) < 0:
        raise EmulatorArgError("--handle-mass and --grip-mass must be > 0, dampings and "
                               "--grip-stiffness >= 0")
    if a.gravity_mass < 0 or a.arm_mass < 0 or not 0 <= a.sync_ticks <= 100:
        raise EmulatorArgError("--gravity-mass and --arm-mass must be >= 0, --sync-ticks 0..100")
    if not 0 <= a.fifo <= 99:
        raise EmulatorArgError("--fifo must be a priority in 1..99 (0: normal scheduling)")
    if not 0 <= a.sync_wait_ms <= 1000:
        raise EmulatorArgError("--sync-wait-ms must be in 0..1000")
    return EmulatorConfig(
        rate_hz=a.rate, watchdog_ms=a.watchdog_ms, max_force=a.max_force, serial=a.serial,
        protocol=a.protocol_version, homed=not a.unhomed, hand=hand, hand_at=a.hand_at,
        hand_stiffness=a.hand_stiffness, hand_radius=a.hand_radius, hand_period=a.hand_period,
        encoder_offset=tuple(int(x) for x in a.encoder_offset), gain_error=a.gain_error,
        axis_sign=tuple(int(x) for x in a.axis_sign),
        force_constant_error=a.force_constant_error, latency_ms=a.latency_ms,
        drop_bytes=a.drop_bytes, drop_rx_bytes=a.drop_rx_bytes, flip_bits=a.flip_bits,
        duplicate=a.duplicate,
        truncate=a.truncate, stall_ms=a.stall_ms, stall_at=a.stall_at,
        stop_replying_at=a.stop_replying_at, unplug_at=a.unplug_at, replug_after=a.replug_after,
        garbage_at_open=a.garbage_at_open, lose_info=a.lose_info, seed=a.seed, link=a.link,
        duration=a.duration,
        event_log=a.event_log, exit_with_parent=a.exit_with_parent, fifo=a.fifo, script=script,
        handle_mass=a.handle_mass, device_damping=a.device_damping, grip_mass=a.grip_mass,
        grip_damping=a.grip_damping, grip_stiffness=a.grip_stiffness, grip_at=a.grip_at,
        gravity_mass=a.gravity_mass, arm_mass=a.arm_mass, arm_shoulder=a.arm_shoulder,
        tilt=a.tilt, sync_ticks=a.sync_ticks, sync_wait_ms=a.sync_wait_ms)
