"""`trocar bench scene`: lockstep session steps of the default scene with both tools pressing the tissue
(or, with --scene cholecystectomy, the anatomy with its three instruments pressing the gallbladder).

Prints one JSON line per run (and a summary line over all runs): whole-tick and per-part
(pybullet, contact, tissue) median and p99 [us], the 1 ms budget share, contact counts. The tools are
scripted: each goes down onto the pad, presses ~1 mm and then traces slow 2 mm circles while pressing
(sliding contact with friction), the grasper with closed jaws, the scissors likewise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from sim.errors import UserError

SPOTS = ((-0.025, 0.0), (0.025, 0.0))  # [m] where the tools press, one per tool


def _press_points(scene) -> np.ndarray:
    """Where each tool presses [m], (n_tools, 3): ~3 mm into the tissue's top at its spot."""
    n = scene.n_tools
    if scene.anatomy is not None:  # the gallbladder: infundibulum, body, neck
        from sim.anatomy import GALLBLADDER

        a = scene.anatomy
        axis = a.landmarks["fundus"] - a.landmarks["neck"]
        spots = [a.landmarks["infundibulum"], a.landmarks["neck"] + 0.4 * axis,
                 a.landmarks["neck"] + 0.25 * axis]
        gb = a.mesh.points[a.node_body == GALLBLADDER]
        out = []
        for i in range(n):
            p = spots[i % len(spots)]
            near = gb[np.linalg.norm(gb[:, :2] - p[:2], axis=1) < 0.005]
            out.append([p[0], p[1], float(near[:, 2].max()) - 3.0e-3])
        return np.array(out)
    top = float(scene.tissue.rest[:, 2].max()) if scene.tissue is not None else 0.02
    return np.array([[*SPOTS[i % len(SPOTS)], top - 3.0e-3] for i in range(n)])


def _script(scene, seconds: float, warm: float):
    """Yield (phase, control) per tick: 'warm' while approaching, 'timed' while pressing."""
    from sim.scene import SceneControl

    dt = scene.dt
    control = scene.hold_control()
    start = control.targets[:, :3].copy()
    press = _press_points(scene)
    above = press + np.array([0.0, 0.0, 0.006])
    steps_warm = max(2, int(round(warm / dt)))
    for k in range(1, steps_warm + 1):
        w = 0.5 - 0.5 * np.cos(np.pi * min(1.0, 2.0 * k / steps_warm))
        w2 = 0.5 - 0.5 * np.cos(np.pi * max(0.0, 2.0 * k / steps_warm - 1.0))
        control.targets[:, :3] = start + w * (above - start) + w2 * (press - above)
        yield "warm", control
    for k in range(int(round(seconds / dt))):
        phase = 2 * np.pi * 0.5 * k * dt  # 0.5 Hz circles of 2 mm radius
        control.targets[:, 0] = press[:, 0] + 4e-3 * np.sin(phase)
        control.targets[:, 1] = press[:, 1] + 4e-3 * (np.cos(phase) - 1.0)
        yield "timed", SceneControl(control.targets, control.jaws)


def run_once(tets: int, tools: int, seconds: float, warm: float, scene_name: str = "default",
             seed: int = 0) -> dict:
    from sim import instruments as inst
    from sim.runtime.step import SessionStep
    from sim.scene import build_scene
    from sim.scene_build import LEFT_PORT, RIGHT_PORT, SCOPE_PORT
    from sim.tissue import warmup
    from sim.tool_scene import ToolSetup

    warmup()
    specs = (inst.GRASPER, inst.SCISSORS, inst.MARYLAND)
    ports_ = (LEFT_PORT, RIGHT_PORT, SCOPE_PORT)
    setups = tuple(ToolSetup(specs[i], ports_[i], depth=0.2) for i in range(tools))
    if scene_name == "cholecystectomy":
        from sim.organs import AnatomyBody

        built = build_scene("cholecystectomy", body=AnatomyBody(seed=seed))
    else:
        built = build_scene("default", tissue_tets=tets, tools=setups)
    with built as scene:
        tools = scene.n_tools
        n_ticks = int(round(seconds / scene.dt))
        whole = np.empty(n_ticks)
        parts = np.empty((n_ticks, 3))
        contacts = np.empty(n_ticks)
        step = SessionStep(scene, [], checksum_every=0)
        i = 0
        for phase, control in _script(scene, seconds, warm):
            t0 = time.perf_counter_ns()
            step.step(t0, control=control)
            t1 = time.perf_counter_ns()
            if phase == "timed":
                whole[i] = (t1 - t0) * 1e-3
                parts[i] = scene.part_ns * 1e-3
                contacts[i] = (np.count_nonzero(scene.contact.touched)
                               + np.count_nonzero(scene.contact.lam_face))
                i += 1
        resets = [e for e in scene.events if e.kind == "tissue_reset"]
        row = {
            "bench": "scene", "scene": scene_name, "tets": scene.tissue.tet_count,
            "nodes": scene.tissue.node_count,
            "tools": tools, "ticks": n_ticks,
            "median_us": round(float(np.median(whole)), 1),
            "p99_us": round(float(np.percentile(whole, 99)), 1),
            "max_us": round(float(whole.max()), 1),
            "over_1ms_fraction": round(float(np.mean(whole > 1000.0)), 5),
            "contacts_mean": round(float(contacts.mean()), 1),  # nodes + faces in contact per tick
            "tool_force_N": [round(float(np.linalg.norm(f)), 3) for f in scene.reaction],
            "tissue_resets": len(resets),
        }
        for k, name in enumerate(("pybullet", "contact", "tissue")):
            row[f"{name}_median_us"] = round(float(np.median(parts[:, k])), 1)
            row[f"{name}_p99_us"] = round(float(np.percentile(parts[:, k], 99)), 1)
    return row


def run(args: argparse.Namespace) -> int:
    if args.tets < 6 or args.tools < 1 or args.tools > 3 or args.seconds <= 0 or args.repeats < 1:
        raise UserError("--tets >= 6, --tools 1..3, --seconds > 0 and --repeats >= 1 are required")
    if args.scene not in ("default", "cholecystectomy"):
        raise UserError(f"--scene must be default or cholecystectomy, got {args.scene!r}")
    rows = [run_once(args.tets, args.tools, args.seconds, args.warm, args.scene, args.seed)
            for _ in range(args.repeats)]
    for row in rows:
        print(json.dumps(row))
    summary = {
        "bench": "scene_summary", "runs": len(rows), "machine": platform.processor() or platform.machine(),
        "median_us_of_runs": round(float(np.median([r["median_us"] for r in rows])), 1),
        "p99_us_of_runs": round(float(np.median([r["p99_us"] for r in rows])), 1),
        "p99_us_worst_run": round(float(max(r["p99_us"] for r in rows)), 1),
        "target_p99_us": 900.0 if args.scene == "default" else 1000.0,
    }
    print(json.dumps(summary))
    if not args.json:
        print(f"whole tick: median {summary['median_us_of_runs']} us, p99 {summary['p99_us_of_runs']} us "
              f"(target p99 <= {summary['target_p99_us']:g} us, one core)")
    return 0


def reset_once(name: str, tets: int | None, repeats: int) -> dict:
    """Build `name`, move the tools for 0.3 s, then time scene.reset() (in place) and a
    get_state/set_state round trip, against building the scene anew."""
    from sim.runtime.step import SessionStep
    from sim.scene import build_scene
    from sim.tissue import warmup

    warmup()
    over = {} if tets is None else {"tissue_tets": tets}
    t0 = time.perf_counter()
    scene = build_scene(name, **over)
    build_ms = (time.perf_counter() - t0) * 1e3
    try:
        control = scene.hold_control()
        step = SessionStep(scene, [], checksum_every=0)
        resets, rounds = [], []
        for _ in range(repeats):
            control.targets[:, 2] -= 0.01
            for _ in range(300):
                step.step(0, control=control)
            control.targets[:, 2] += 0.01
            a = time.perf_counter()
            saved = scene.get_state()
            scene.set_state(saved)
            b = time.perf_counter()
            saved.release()
            scene.reset(seed=1)
            c = time.perf_counter()
            rounds.append((b - a) * 1e3)
            resets.append((c - b) * 1e3)
        row = {"bench": "reset", "scene": name,
               "tets": scene.tissue.tet_count if scene.tissue is not None else 0,
               "repeats": repeats, "reset_ms_median": round(float(np.median(resets)), 3),
               "reset_ms_max": round(float(np.max(resets)), 3),
               "save_restore_ms_median": round(float(np.median(rounds)), 3),
               "build_ms": round(build_ms, 1)}
    finally:
        scene.close()
    return row


def run_reset(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    for name in args.scenes.split(","):
        from sim.scene_build import SCENES

        if name not in SCENES:
            raise UserError(f"unknown scene {name!r}; built-in scenes: {', '.join(SCENES)}")
    for name in args.scenes.split(","):
        row = reset_once(name, args.tets if name == "default" else None, args.repeats)
        print(json.dumps(row), flush=True)
        if not args.json:
            print(f"{name}: reset {row['reset_ms_median']} ms median (build {row['build_ms']} ms)")
    return 0


def register(sub, bsub) -> None:
    """Add `trocar bench scene` and `trocar bench reset`."""
    r = bsub.add_parser("reset", help="scene.reset() in place and get/set_state, against a new build")
    r.add_argument("--scenes", default="default,peg_transfer", help="comma-separated scenes")
    r.add_argument("--tets", type=int, help="tissue tet count of the default scene (default 5000)")
    r.add_argument("--repeats", type=int, default=10, help="resets timed per scene (default 10)")
    r.add_argument("--json", action="store_true", help="JSON lines only")
    r.set_defaults(func=run_reset)
    b = bsub.add_parser("scene", help="whole-tick time of the default scene, tools pressing the tissue")
    b.add_argument("--tets", type=int, default=5000, help="approximate tissue tet count (default 5000)")
    b.add_argument("--tools", type=int, default=2, help="tools pressing the tissue, 1-3 (default 2)")
    b.add_argument("--seconds", type=float, default=5.0, help="timed simulated seconds per run (default 5)")
    b.add_argument("--warm", type=float, default=0.6, help="untimed approach [s] before timing (default 0.6)")
    b.add_argument("--repeats", type=int, default=1,
                   help="runs; one JSON line each plus a summary (default 1)")
    b.add_argument("--scene", default="default",
                   help="default (the pad, --tets/--tools) or cholecystectomy (its anatomy and 3 tools)")
    b.add_argument("--seed", type=int, default=0, help="anatomy seed of --scene cholecystectomy")
    b.add_argument("--json", action="store_true", help="JSON lines only")
    b.set_defaults(func=run)
