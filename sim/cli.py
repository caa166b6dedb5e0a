"""The `trocar` command line: one argparse tree, each subcommand's work lives in its own module.

Errors a user can cause (bad mesh, bad option value) print one line `trocar: error: ...` to stderr
and exit with status 2; nothing is written on those paths.
"""

from __future__ import annotations

import argparse
import sys

from sim.errors import UserError
from sim.mesh import MeshError


def _cmd_demo(args: argparse.Namespace) -> int:
    from sim.demo import run_demo

    return run_demo(args)


def _cmd_bench_tissue(args: argparse.Namespace) -> int:
    from benchmarks.tissue import run

    return run(args)


def _cmd_mesh(args: argparse.Namespace) -> int:
    from sim.mesh_cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trocar",
        description="trocar: laparoscopic surgery simulator with haptic feedback.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", help="headless tissue demo: a block settles under gravity and a load")
    d.add_argument("--tets", type=int, default=5000, help="approximate tet count (default 5000)")
    d.add_argument("--mesh", help="simulate this mesh file (.vtu/.vtk/.msh) instead of the block")
    d.add_argument("--load", type=float, default=1.0,
                   help="downward load spread over the top face [N] (default 1)")
    d.add_argument("--seconds", type=float, default=1.0, help="simulated time [s] (default 1)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="benchmarks, each printing JSON")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH", required=True)
    bt = bsub.add_parser("tissue", help="tissue step time and static sag error (vs PyBullet)")
    bt.add_argument("--tets", type=int, nargs="+",
                    help="approximate tet counts of the block (default 1000 5000 20000; "
                         "with --accuracy 1000)")
    bt.add_argument("--steps", type=int, default=1000, help="timed steps per engine (default 1000)")
    bt.add_argument("--settle", type=float, default=1.5,
                    help="simulated seconds to settle before timing (default 1.5)")
    bt.add_argument("--repeats", type=int, default=3,
                    help="timed runs per engine; medians/p99 pooled over all (default 3)")
    bt.add_argument("--peer", choices=["pybullet"], help="also run this engine on the same mesh")
    bt.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="Numba thread counts to report separately (default 1)")
    bt.add_argument("--export-mesh", metavar="PATH",
                    help="write the exact mesh used (meshio-readable); {tets} is replaced")
    bt.add_argument("--load", type=float, default=0.0,
                    help="downward point load on the pad's centre top node [N] (default 0; the "
                         "issue's worst case is 2)")
    bt.add_argument("--elasticity", choices=["corotated", "neohookean"], default="neohookean",
                    help="elastic law of the timed pad (default neohookean, the scene's)")
    bt.add_argument("--accuracy", action="store_true",
                    help="instead of timing: statics, frequencies, settling and spin against "
                         "references computed in the run (slow: minutes)")
    bt.add_argument("--json", action="store_true", help="JSON lines only (no human summary)")
    bt.set_defaults(func=_cmd_bench_tissue)

    m = sub.add_parser("mesh", help="generate, check and convert tet meshes")
    msub = m.add_subparsers(dest="mesh_command", metavar="ACTION", required=True)
    mc = msub.add_parser("check", help="validate a mesh file and print its size")
    mc.add_argument("path")
    mc.set_defaults(func=_cmd_mesh)
    mg = msub.add_parser("generate", help="write a procedural mesh (block, ellipsoid, sheet, tube)")
    mg.add_argument("kind", choices=["block", "ellipsoid", "sheet", "tube"])
    mg.add_argument("--out", required=True, help="output file (.vtu, .vtk or .msh)")
    mg.set_defaults(func=_cmd_mesh)

    from haptics.cli import register as register_haptics

    register_haptics(sub, bsub)
    # Each subsystem adds its own subcommands (run/replay/bench loop, render, bench scene).
    import importlib

    for module in ("sim.runtime.cli", "sim.render.cli", "benchmarks.scene_cli", "benchmarks.cut",
                   "benchmarks.procedure_cli", "benchmarks.tear_cli", "benchmarks.clip_cli",
                   "trainees.cli", "console.cli", "benchmarks.batch"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):  # a dependency of it is missing
                raise
            continue
        mod.register(sub, bsub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (MeshError, UserError) as exc:
        print(f"trocar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trocar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
