"""`trocar run`, `trocar replay` and `trocar bench loop` (registered by sim.cli).

Bad input (a bad --device string, a missing recording) prints one line `trocar: error: ...` and
exits with status 2. `trocar replay` exits 0 when every recorded checksum and event was
reproduced over a complete recording, 1 on a mismatch, 3 when the recording is damaged or
incomplete (truncated, CRC error, no END chunk) but everything before the damage reproduced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sim.errors import UserError


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    if getattr(args, "tets", None) is not None:
        if args.tets < 0:
            raise UserError("--tets must be >= 0")
        out["tissue_tets"] = args.tets
    return out


def _scenes() -> tuple[str, ...]:
    """sim.scene_build.SCENES; pybullet's import banner (C stdio) is kept off stderr so that an error
    stays one line."""
    import importlib

    if "pybullet" not in sys.modules:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            importlib.import_module("pybullet")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    from sim.scene_build import SCENES

    return SCENES


def _procedures() -> tuple[str, ...]:
    """Procedure names `trocar run` accepts as a scene (none if procedures/ has no registry)."""
    try:
        from procedures.registry import PROCEDURES
    except ImportError:
        return ()
    return tuple(PROCEDURES)


def _device_list(args: argparse.Namespace) -> str:
    """The per-hand device list: --device, or --left/--right (a missing side holds its tool: null)."""
    left, right = getattr(args, "left", None), getattr(args, "right", None)
    if left is None and right is None:
        return args.device or "emu"
    if args.device is not None:
        raise UserError("give either --device or --left/--right, not both")
    return f"{left or 'null'},{right}" if right is not None else left


def _config(args: argparse.Namespace):
    from sim.runtime.config import RunConfig
    from sim.runtime.devices import parse_devices

    SCENES = _scenes()  # noqa: N806

    procedures = _procedures()
    if args.scene not in SCENES and args.scene not in procedures:
        raise UserError(f"unknown scene {args.scene!r}; built-in scenes: {', '.join(SCENES)}"
                        + (f"; procedures: {', '.join(procedures)}" if procedures else ""))
    device = _device_list(args)
    parse_devices(device)  # validate before starting anything
    if args.seconds is not None and args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    if args.threads < 1:
        raise UserError("--threads must be >= 1")
    if args.lockstep and args.seconds is None:
        raise UserError("--lockstep needs --seconds")
    if args.record:
        folder = os.path.dirname(os.path.abspath(args.record))
        if not os.path.isdir(folder):
            raise UserError(f"--record: no such directory: {folder}")
    return RunConfig(scene=args.scene, overrides=_overrides(args), device=device,
                     display=args.display, seconds=args.seconds, record=args.record,
                     rate_mode=args.rate_mode, lockstep=args.lockstep, soft_start_s=args.soft_start,
                     scale=args.scale, seed=args.seed, realtime_priority=not args.no_fifo,
                     affinity=not args.no_affinity, emu_event_log=args.emu_event_log,
                     threads=args.threads, share=getattr(args, "share", False))


def _cmd_run_procedure(args: argparse.Namespace) -> int:
    """`trocar run PROCEDURE --policy NAME`: scripted hands play and score the procedure through the
    session step (sim.runtime.procedure_session), lockstep or paced to the wall clock."""
    from procedures.registry import PROCEDURES

    if args.scene not in PROCEDURES:
        raise UserError(f"--policy needs a procedure, not {args.scene!r}; "
                        f"procedures: {', '.join(PROCEDURES)}")
    if args.seconds is not None and args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    if args.record and not os.path.isdir(os.path.dirname(os.path.abspath(args.record))):
        raise UserError(f"--record: no such directory: {os.path.dirname(os.path.abspath(args.record))}")
    _scenes()
    from sim.runtime.procedure_session import run_procedure_session

    result = run_procedure_session(args.scene, args.policy, seed=args.seed, record=args.record,
                                   seconds=args.seconds, realtime=not args.lockstep, display=args.display)
    return 0 if result.status in ("success", "failure", "timeout") else 1


def _cmd_run(args: argparse.Namespace) -> int:
    """`trocar run`; with --trainee the attempt is stored in the records: begun (as incomplete, with its
    recording) before the session, finished from `<recording>.result.json` however the session ends."""
    if not getattr(args, "trainee", None):
        return _cmd_run_session(args)
    from procedures.registry import PROCEDURES, get_procedure
    from sim.runtime.config import default_record_path
    from trainees.runlink import begin_for_run, finish_for_run

    if args.scene not in PROCEDURES:
        raise UserError(f"--trainee needs a procedure to score, not {args.scene!r}; "
                        f"procedures: {', '.join(PROCEDURES)}")
    if args.record and not os.path.isdir(os.path.dirname(os.path.abspath(args.record))):
        raise UserError(f"--record: no such directory: {os.path.dirname(os.path.abspath(args.record))}")
    args.record = args.record or default_record_path()
    proc = get_procedure(args.scene)
    attempt = begin_for_run(args, proc.name, proc.version, recording=args.record, seed=args.seed)
    try:
        return _cmd_run_session(args)
    finally:
        status = finish_for_run(args, attempt, args.record)
        if status is not None:
            print(f"records: attempt {attempt} stored for trainee {args.trainee}", flush=True)


def _cmd_run_session(args: argparse.Namespace) -> int:
    if getattr(args, "share", False) and (args.lockstep or getattr(args, "policy", None)):
        raise UserError("--share needs a real-time session with devices (not --lockstep or --policy)")
    if getattr(args, "policy", None):
        return _cmd_run_procedure(args)
    cfg = _config(args)
    if cfg.lockstep:
        from sim.runtime.config import default_record_path
        from sim.runtime.lockstep import find_procedure, run_lockstep
        from sim.runtime.timing import format_report

        cfg.record = cfg.record or default_record_path()
        proc = find_procedure(cfg.scene)
        report = run_lockstep(cfg, procedure=proc)
        print(format_report(report, "timing (lockstep)"))
        print(f"final checksum {report['checksum']}")
        print(f"recording: {cfg.record}")
        if proc is not None:
            from sim.runtime.procedure_session import finish_procedure

            finish_procedure(proc, cfg.record)
        return 0
    from sim.runtime.realtime import run_realtime, summarize

    summary = run_realtime(cfg)
    text, code = summarize(summary)
    if code == 2:
        raise UserError(text)
    print(text, flush=True)
    if cfg.record and cfg.scene in _procedures() and os.path.isfile(cfg.record):
        from sim.runtime.procedure_session import score_recording

        score_recording(cfg.record)  # the servo process held the procedure: re-run it from the recording
    return code


def _cmd_replay(args: argparse.Namespace) -> int:
    from sim.runtime.recording import is_recording

    if not os.path.isfile(args.file):
        raise UserError(f"no such recording: {args.file}")
    if not is_recording(args.file):
        raise UserError(f"{args.file}: not a trocar session recording")
    _scenes()
    from sim.runtime.lockstep import find_procedure, replay
    from sim.runtime.recording import read_recording

    rec = read_recording(args.file)  # once: replay and the re-scoring read the same rows
    procedure = find_procedure(rec.meta.get("scene", ""))
    r = replay(args.file, procedure=procedure, recording=rec)
    if r.mismatch is not None:
        k, want, got = r.mismatch
        print(f"replay: MISMATCH after tick {k}: recorded {want[:16]}, replayed {got[:16]}")
        return 1
    if not r.events_equal:
        print(f"replay: MISMATCH: events differ over ticks 0..{r.last_tick}")
        return 1
    print(f"replay: {r.ticks} ticks, {r.checked} checksums equal")
    if procedure is not None and r.complete and not r.damage:
        from sim.runtime.procedure_session import print_result, replayed_result

        result, same = replayed_result(procedure, args.file, rec)
        print_result(result)
        if same is False:
            print("replay: MISMATCH: the replayed result differs from the recorded "
                  f"{os.path.basename(args.file)}.result.json")
            return 1
        if same:
            print("replay: result equals the recorded one")
    if r.damage:
        print(f"replay: damaged recording: {r.damage}; replayed up to tick {r.last_tick}")
        return 3
    if not r.complete:
        print(f"replay: incomplete recording (no END chunk: the session was killed); replayed up to "
              f"tick {r.last_tick}")
        return 3
    return 0


def _cmd_bench_loop(args: argparse.Namespace) -> int:
    from benchmarks.loop import run
    from sim.runtime.devices import parse_device

    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    scenes = _scenes()
    if args.scene not in scenes:
        raise UserError(f"unknown scene {args.scene!r}; built-in scenes: {', '.join(scenes)}")
    parse_device(args.device)
    for row in run(args):
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


def _add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", nargs="?", default="default", help="built-in scene (default: default)")
    p.add_argument("--device", default=None,
                   help="emu | serial:PORT | keyboard | replay:FILE | null, one per hand, comma "
                        "separated: 'emu,emu' drives tool 0 and tool 1 (default emu)")
    p.add_argument("--left", help="device of the left hand (tool 0); with --right: bimanual")
    p.add_argument("--right", help="device of the right hand (tool 1)")
    p.add_argument("--tets", type=int, help="override the tissue tet count (0: no tissue)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--record", help="session recording path (default: "
                   "~/.local/state/trocar/sessions/session-*.trec)")
    p.add_argument("--rate-mode", choices=["realtime", "multirate", "auto"], default="auto",
                   help="realtime: one 1 kHz servo+physics process; multirate: 1 kHz servo with a "
                   "local contact model, physics at its own rate; auto: multirate if the p90 of "
                   "200 warm-up ticks is above 0.8 ms (default auto)")
    p.add_argument("--lockstep", action="store_true",
                   help="one process, no sleeping, deterministic (needs --seconds)")
    p.add_argument("--soft-start", type=float, default=2.0, help="device force ramp [s] (default 2)")
    p.add_argument("--scale", type=float, default=1.5, help="device -> world position scale")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (recorded)")
    p.add_argument("--no-fifo", action="store_true", help="do not ask for SCHED_FIFO")
    p.add_argument("--no-affinity", action="store_true", help="do not pin the servo to a CPU")
    p.add_argument("--threads", type=int, default=1,
                   help="Numba threads for the tissue (default 1; always 1 in a pinned servo)")
    p.add_argument("--emu-event-log", help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction, bsub: argparse._SubParsersAction) -> None:
    """Add `run`, `replay` and `bench loop`."""
    r = sub.add_parser("run", help="a session: 1 kHz haptic loop, renderer, recording")
    _add_session_args(r)
    r.add_argument("--display", choices=["window", "xr", "headless", "auto"], default="auto",
                   help="window, xr, headless, or auto: a window if $DISPLAY is set (default auto)")
    r.add_argument("--policy", choices=["expert", "novice"],
                   help="scripted hands play the procedure named as the scene (e.g. peg_transfer) on "
                   "both tools, scored; paced in real time unless --lockstep")
    r.add_argument("--share", action="store_true",
                   help="let the instructor console (trocar serve) watch, guide and pause this session")
    from trainees.runlink import add_run_args

    add_run_args(r)  # --trainee, --records-db, --rules: store the attempt in the trainee records
    r.set_defaults(func=_cmd_run)
    rp = sub.add_parser("replay", help="re-run a session recording in lockstep; verify checksums")
    rp.add_argument("file", help="recording (.trec)")
    rp.set_defaults(func=_cmd_replay)
    bl = bsub.add_parser("loop", help="1 kHz loop timing: empty loop vs scene + device + renderer")
    bl.add_argument("--seconds", type=float, default=30.0, help="seconds per case (default 30)")
    bl.add_argument("--scene", default="default", help="scene for case 2 (default default)")
    bl.add_argument("--tets", type=int, help="override the tissue tet count")
    bl.add_argument("--device", default="emu", help="device for case 2 (default emu)")
    bl.add_argument("--display", choices=["window", "xr", "headless"], default="headless",
                    help="renderer for case 2 (default headless stub)")
    bl.add_argument("--rate-mode", choices=["realtime", "multirate", "auto"], default="realtime",
                    help="rate mode for case 2 (default realtime)")
    bl.add_argument("--no-fifo", action="store_true", help="do not ask for SCHED_FIFO")
    bl.add_argument("--no-affinity", action="store_true", help="do not pin the servo to a CPU")
    bl.add_argument("--json", action="store_true", help="JSON lines only")
    bl.set_defaults(func=_cmd_bench_loop)


