"""`trocar mesh ...`: check a mesh file, write a procedural one. Argument parsing lives in sim.cli.

`check` accepts exactly what `trocar demo --mesh` can simulate: a valid file (sim.mesh_io) that
rests on the floor with something free and nothing floating (sim.mesh.check_on_floor).

Problems with a mesh raise `MeshError`; sim.cli prints them as one `trocar: error:` line, exit 2.
"""

from __future__ import annotations

import argparse

import numpy as np

from sim import mesh_generators
from sim.mesh import TetMesh, check_on_floor
from sim.mesh_io import load_mesh, save_mesh

# Generators with their default (surgical) sizes, by the name `trocar mesh generate` accepts.
GENERATORS = {
    "block": mesh_generators.block,
    "ellipsoid": mesh_generators.ellipsoid,
    "sheet": mesh_generators.sheet,
    "tube": mesh_generators.tube,
}


def describe(mesh: TetMesh) -> str:
    """One-line summary: node, tet and surface-triangle counts, volume [m^3], bounding box [m]."""
    lo, hi = mesh.points.min(axis=0), mesh.points.max(axis=0)
    box = " x ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi, strict=True))
    return (f"{mesh.node_count} nodes, {mesh.tet_count} tets, "
            f"{len(mesh.surface_triangles())} surface triangles, "
            f"volume {float(np.sum(mesh.volumes())):.3e} m^3, bounding box {box} m")


def run(args: argparse.Namespace) -> int:
    """Dispatch `args.mesh_command` ("check" or "generate"); returns the exit status."""
    if args.mesh_command == "check":
        mesh = load_mesh(args.path)
        check_on_floor(mesh, source=args.path)  # what `trocar demo --mesh` will simulate
        print(f"{args.path}: {describe(mesh)}")
        return 0
    if args.mesh_command == "generate":
        mesh = GENERATORS[args.kind]()
        save_mesh(args.out, mesh)
        print(f"wrote {args.out}: {args.kind}, {describe(mesh)}")
        return 0
    raise ValueError(f"unknown mesh command {args.mesh_command!r}")
