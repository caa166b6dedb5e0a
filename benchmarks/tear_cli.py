"""`trocar bench tear`: pull a tissue strip until it tears; force at the tear against the threshold.

For each tear material (`sim.damage.TEAR_MATERIALS`, default: the fragile and strong ends of the
safe-pulling-force range and the gallbladder wall) a strip (30 x 10 x 3 mm, both ends clamped,
900 tets) is pulled along its axis by moving one clamp at --speed, as a tensile tester does, in
the full scene tick (lockstep). The strip's Young's modulus is set so that it tears at
TEAR_STRAIN (20 %): a strong material is a stiff one, and the co-rotated small-strain measure stays
in its range. The force is the tissue's elastic force on the moving clamp (`TissueInjury.probe`);
the 'tear' event carries it. One JSON line per material: threshold [N], force at the tear [N],
relative error [%] (target |error| <= 10 %), the force 0.2 s later [N] (it must drop), the
stretch at the tear [%], ticks and wall time; then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from sim.errors import UserError

TEAR_STRAIN = 0.20  # strain at which each bench strip tears (its modulus is chosen for it)
DEFAULT_MATERIALS = ("fragile", "gallbladder", "fascia")
ERROR_MAX = 10.0  # [%]


def pull_until_tear(material: str, *, speed: float = 0.01, max_s: float = 3.0, after_s: float = 0.2) -> dict:
    """Pull a strip of `material` at `speed` [m/s] until it tears (or max_s [s] of simulated time);
    returns the measurements (see the module docstring)."""
    from sim.damage import tear_material
    from sim.scene import SceneControl, build_scene
    from sim.tissue_bodies import STRIP_TISSUE, StripBody
    from sim.tissue_model import TissueMaterial

    mat = tear_material(material)
    body = StripBody(tear=material, clamp_both=True)
    young = mat.tear_stress(body.width * body.thickness) / TEAR_STRAIN
    body = StripBody(tear=material, clamp_both=True,
                     material=TissueMaterial(young=young, poisson=STRIP_TISSUE.poisson,
                                             density=STRIP_TISSUE.density, damping=STRIP_TISSUE.damping))
    scene = build_scene("default", body=body, tissue_tets=1, tools=())
    try:
        x0 = scene.tissue.rest[:, 0]
        end = np.flatnonzero(scene.tissue.fixed & (x0 > x0.max() - 1e-9))
        scene.injury.set_probe(end)
        control = SceneControl(np.zeros((0, 4)), np.zeros(0))
        dt = scene.dt
        tear_tick = None
        event = None
        after = None
        t0 = time.perf_counter()
        for k in range(int(round(max_s / dt))):
            if tear_tick is None:
                scene.tissue_state.x[end, 0] += speed * dt
            scene.tick(control, dt)
            if tear_tick is None:
                tears = [e for e in scene.events if e.kind == "tear"]
                if tears:
                    event, tear_tick = tears[0], k
            elif k - tear_tick >= int(round(after_s / dt)):
                after = scene.injury.pull_force(scene.tissue_state, scene.reaction)[0]
                break
        wall = time.perf_counter() - t0
        stretch = float(scene.tissue_state.x[end, 0].mean() - x0.max()) / body.length
        out = {"bench": "tear", "material": material, "threshold_n": mat.tear_force, "source": mat.source,
               "young_pa": round(young, 1), "speed_m_s": speed, "torn": event is not None,
               "force_at_tear_n": round(event.value, 4) if event else None,
               "error_pct": (round(100.0 * (event.value - mat.tear_force) / mat.tear_force, 2)
                             if event else None),
               "force_after_n": round(after, 4) if after is not None else None,
               "stretch_at_tear_pct": round(100.0 * stretch, 2),
               "tear_tick": tear_tick, "failed_elements": scene.injury.damage.summary()["failed"],
               "tets": scene.tissue.tet_count, "wall_s": round(wall, 2)}
    finally:
        scene.close()
    return out


def run_tear(args: argparse.Namespace) -> int:
    from sim.damage import TEAR_MATERIALS

    mats = args.materials or list(DEFAULT_MATERIALS)
    bad = [m for m in mats if m not in TEAR_MATERIALS]
    if bad:
        raise UserError(f"unknown tear material(s) {', '.join(bad)}; known: {', '.join(TEAR_MATERIALS)}")
    if not 0.0 < args.speed <= 0.1:
        raise UserError("--speed must be in (0, 0.1] m/s")
    rows = []
    for m in mats:
        row = pull_until_tear(m, speed=args.speed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    errs = [abs(r["error_pct"]) for r in rows if r["error_pct"] is not None]
    summary = {"bench": "tear_summary", "materials": len(rows), "torn": sum(r["torn"] for r in rows),
               "max_abs_error_pct": max(errs) if errs else None, "target_pct": ERROR_MAX,
               "all_within": len(errs) == len(rows) and max(errs) <= ERROR_MAX,
               "force_drops": all(r["force_after_n"] is not None
                                  and r["force_after_n"] < 0.5 * r["threshold_n"] for r in rows),
               "machine": platform.machine(), "cpus": os.cpu_count(),
               "loadavg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(summary))
    return 0 if summary["all_within"] else 1


def register(sub, bsub) -> None:
    """Add `trocar bench tear`."""
    b = bsub.add_parser("tear", help="pull tissue strips until they tear: force at tear vs threshold (JSON)")
    b.add_argument("materials", nargs="*", help=f"tear materials (default: {' '.join(DEFAULT_MATERIALS)})")
    b.add_argument("--speed", type=float, default=0.01, help="clamp speed [m/s] (default 0.01)")
    b.set_defaults(func=run_tear)
