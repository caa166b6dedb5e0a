"""`trocar demo`: the headless main job for now. A tissue pad (or a mesh file) settles under gravity,
then a load is pressed onto its top face; it prints what a user can check: sag against converged
linear FEM, and the step time against the 1 ms haptic budget.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.errors import UserError
from sim.mesh import check_on_floor, floor_clamped
from sim.mesh_generators import block, block_cells_for
from sim.tissue import TissueControl, make_state, step, warmup
from sim.tissue_model import TissueMaterial, TissueModelBuilder, linear_static

DT = 1e-3
PAD = (0.10, 0.06, 0.02)


def run_demo(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.tets < 6:
        raise UserError("--seconds must be > 0 and --tets >= 6")
    if not np.isfinite(args.load):
        raise UserError("--load must be a finite force in newtons")
    if args.mesh:
        from sim.mesh_io import load_mesh

        mesh = load_mesh(args.mesh)
        check_on_floor(mesh, source=args.mesh)
        what = args.mesh
    else:
        mesh = block(PAD, block_cells_for(args.tets, PAD))
        what = "tissue pad 0.100 x 0.060 x 0.020 m"
    material = TissueMaterial()
    print(f"trocar demo: {what}, {mesh.tet_count} tets, {mesh.node_count} nodes; "
          f"E = {material.young / 1e3:g} kPa, nu = {material.poisson}, "
          f"rho = {material.density:g} kg/m^3, bottom tenth clamped, dt = 1 ms")
    print(f"kernels ready in {warmup():.2f} s")
    # The organ rests on the floor (sim.mesh.floor_clamped: the bottom tenth of its height).
    model = TissueModelBuilder(mesh, material).fix_nodes(floor_clamped(mesh.points)).finalize(dt=DT)
    state = make_state(model)
    top = model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9
    control = TissueControl.zeros(model)

    def sag_mm() -> float:
        return float(-(state.x[top, 2] - model.rest[top, 2]).mean() * 1e3)

    steps = max(2, int(round(args.seconds / DT)))
    times = np.empty(2 * steps)
    for phase, load in enumerate((0.0, args.load)):
        control.force[top, 2] = -load / top.sum()
        for i in range(steps):
            t0 = time.perf_counter_ns()
            step(model, state, control, None, DT)
            times[phase * steps + i] = (time.perf_counter_ns() - t0) * 1e-3
            if i % max(1, steps // 4) == 0 or i == steps - 1:
                print(f"  t = {state.time:5.2f} s  load {load:5.2f} N  sag {sag_mm():7.4f} mm  "
                      f"step {times[phase * steps + i]:6.0f} us")
        if phase == 0:
            gravity_sag = sag_mm()
    ref = float(-linear_static(model, control.force)[top, 2].mean() * 1e3)
    print(f"settled: sag {gravity_sag:.4f} mm under gravity, {sag_mm():.4f} mm with {args.load:g} N "
          f"on top; linear FEM {ref:.4f} mm ({100 * (sag_mm() / ref - 1):+.2f} %)")
    print(f"step time: median {np.median(times):.0f} us, p99 {np.percentile(times, 99):.0f} us "
          f"(haptic budget 1000 us); inverted elements {state.inverted}")
    return 0

