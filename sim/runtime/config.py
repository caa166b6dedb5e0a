"""What a session runs with (one picklable dataclass, handed to every process) and its META."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field


@dataclass
class RunConfig:
    """A `trocar run` session.

    scene: built-in scene name or procedure name; overrides: SceneConfig field overrides (e.g.
    tissue_tets); device: `--device` string, one device per hand, comma separated;
    display: window|xr|headless; seconds: stop after this long (None:
    until Ctrl-C/SIGTERM); record: recording path; rate_mode: realtime|multirate|auto; lockstep:
    run the tick in one process without sleeping (needs seconds); publish_every: snapshot every N
    ticks; checksum_every: scene checksum every N ticks; soft_start_s: device force ramp [s];
    scale: workspace position scale; seed: the session's seed (scene.rng, procedure; recorded);
    emu_args: extra options for every 'emu' device; hand_emu_args: per hand, extra options for that
    hand's emulator (empty: the procedure's `emulator_hands`, if any); emu_event_log: emulator
    event log path (hand h > 0: path.h);
    realtime_priority: try SCHED_FIFO; affinity: pin the servo to one CPU when there are >= 2;
    threads: Numba threads for the tissue kernels (1 whenever the servo is pinned);
    share: register the session for the instructor console (`sim.runtime.share`); guide: the
    shared-memory names of its guide channel (set by the supervisor).
    """

    scene: str = "default"
    overrides: dict = field(default_factory=dict)
    device: str = "emu"
    display: str = "headless"
    seconds: float | None = None
    record: str | None = None
    rate_mode: str = "auto"
    lockstep: bool = False
    publish_every: int = 10
    checksum_every: int = 100
    soft_start_s: float = 2.0
    scale: float = 1.5
    seed: int = 0
    emu_args: tuple = ()
    hand_emu_args: tuple = ()
    emu_event_log: str | None = None
    realtime_priority: bool = True
    affinity: bool = True
    fifo_priority: int = 80
    threads: int = 1
    share: bool = False
    guide: tuple = ()

    def as_meta(self) -> dict:
        # Sharing is how the session was watched, not what it simulated (a shared session's servo
        # writes a NOTE instead), and the guide's shared-memory names mean nothing afterwards.
        meta = asdict(self)
        del meta["share"], meta["guide"]
        return meta


def default_record_path() -> str:
    """Where a session's recording goes when --record is not given."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    folder = os.path.join(base, "trocar", "sessions")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, time.strftime("session-%Y%m%d-%H%M%S") + f"-{os.getpid()}.trec")


def session_meta(cfg: RunConfig, scene, wmaps, mode: str) -> dict:
    """The META chunk: everything replay needs plus what a person wants to know later.
    wmaps: the hands' workspace maps (a list, hand order; one map is taken as one hand)."""
    from sim.runtime.recording import versions

    if not isinstance(wmaps, (list, tuple)):
        wmaps = [wmaps]

    return {
        "mode": mode,
        "scene": cfg.scene,
        "overrides": cfg.overrides,
        "dt": scene.dt,
        "n_tools": scene.n_tools,
        "tools": [t.spec.name for t in scene.tools],
        "device": cfg.device,
        "map": wmaps[0].describe() if wmaps else None,
        "hands": [w.describe() for w in wmaps],
        "n_hands": max(1, len(wmaps)),
        "seed": cfg.seed,
        "checksum_every": cfg.checksum_every,
        "config": cfg.as_meta(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
