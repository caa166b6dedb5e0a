"""`trocar bench tissue --accuracy`: the tissue step far from rest against references computed in
the same run (issue 13). One JSON line per case:

- ``static``: the pad (0.10 x 0.06 x 0.02 m, bottom clamped, 10 kPa) under 0.3-2 N on its centre top
  node (stable neo-Hookean; 0.5 and 2 N also co-rotational), a 30 mm grasp-and-retract of a top
  patch of the pad (30 kPa co-rotational, the scene's material), and a
  soft beam (10 x 1 x 1 cm, 15 kPa, clamped at one end) released under gravity: the settled state
  of the 1 ms time stepper against the converged nonlinear static FEM of the same model
  (`sim.tissue_reference.static_equilibrium`); error = |u - u_ref| / |u_ref| at the probe.
- ``frequency``: first-mode frequency of the ringing (undamped, released in the mode shape) against
  modal FEM, for the beam and for the pad with the scene's material and with neo-Hookean.
- ``settling``: the scene's pad (30 kPa co-rotational, damping 0.01 s) released under gravity:
  1 % settling time and overshoot of the top face's sag at dt = 1 ms against dt = 0.1 ms with a
  100x tighter solver tolerance (the small-step reference).
- ``spin``: a free 4 x 3 x 2 cm block spinning at 10 rad/s with no damping for 2 s: relative change
  of angular momentum and kinetic energy.
Every case also reports whether the run stayed stable (no `TissueDivergedError`).
"""

from __future__ import annotations

import json
import time

import numpy as np

from sim.mesh_generators import block, block_cells_for
from sim.tissue import TissueControl, TissueDivergedError, kinetic_energy, make_state, step
from sim.tissue_model import TissueMaterial, TissueModelBuilder
from sim.tissue_reference import first_mode, ringing_frequency, static_equilibrium

PAD = (0.10, 0.06, 0.02)
SOFT_PAD = TissueMaterial(young=10e3, poisson=0.45, damping=0.01, elasticity="neohookean")
SOFT_PAD_COROTATED = TissueMaterial(young=10e3, poisson=0.45, damping=0.01)
#: The scene's pad material (sim.scene_build.TRAINER_PAD), written out so the benchmark does not
#: import the scene (PyBullet).
SCENE_PAD = TissueMaterial(young=30e3, poisson=0.45, damping=0.01, elasticity="corotated")
BEAM = TissueMaterial(young=15e3, poisson=0.45, damping=0.01, mass_damping=4.0)
DT = 1e-3


def pad(material, tets, *, fixed_extra=None, dt=DT, **solver):
    mesh = block(PAD, block_cells_for(tets, PAD))
    b = TissueModelBuilder(mesh, material).fix_below(0.0)
    if fixed_extra is not None:
        b.fix_nodes(fixed_extra(mesh.points))
    return b.finalize(dt=dt, **solver)


def beam(material, *, gravity=True):
    b = TissueModelBuilder(block((0.1, 0.01, 0.01), (10, 2, 2)), material)
    if not gravity:
        b.gravity[:] = 0.0
    return b.fix_nodes(b.mesh.points[:, 0] <= 1e-9).finalize(dt=DT)


def centre_top(points):
    top = np.flatnonzero(points[:, 2] >= points[:, 2].max() - 1e-9)
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    return top[np.argsort(np.linalg.norm(points[top, :2] - centre[:2], axis=1))]


def settle(model, state, seconds, control=None, on_step=None):
    """Run; returns (stable, error message, largest speed over the last 0.1 s [m/s], mean evals)."""
    steps = int(round(seconds / DT))
    tail = []
    evals = 0
    try:
        for k in range(steps):
            if on_step is not None:
                on_step(k, state)
            step(model, state, control, None, DT)
            evals += state.evaluations
            if k >= steps - 100:
                tail.append(state.max_speed)
    except TissueDivergedError as exc:
        return False, str(exc), float("nan"), float("nan")
    return True, None, float(max(tail)), evals / steps


def static_row(case, model, state, ref, probe, stable, error, tail_speed, evals, t0):
    u = (state.x - model.rest)[probe].mean(axis=0)
    u_ref = (ref - model.rest)[probe].mean(axis=0)
    row = {"bench": "tissue_accuracy", "kind": "static", "case": case,
           "elasticity": model.material.elasticity, "tets": model.tet_count,
           "u_mm": np.round(u * 1e3, 4).tolist(), "u_ref_mm": np.round(u_ref * 1e3, 4).tolist(),
           "err": round(float(np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref)), 5),
           "inverted": int(state.inverted), "settled_speed_m_s": tail_speed,
           "evals_per_step": round(evals, 2), "stable": stable, "wall_s": round(time.perf_counter() - t0, 1)}
    if error:
        row["error"] = error
    return row


def point_load_cases(tets, loads, material):
    for load in loads:
        t0 = time.perf_counter()
        model = pad(material, tets)
        node = centre_top(model.rest)[:1]
        force = np.zeros((model.node_count, 3))
        force[node, 2] = -load
        state = make_state(model)
        stable, error, tail, evals = settle(model, state, 1.0, TissueControl(force))
        ref = static_equilibrium(model, force, increments=8)
        yield static_row(f"pad_point_load_{load:g}N", model, state, ref, node, stable, error, tail,
                         evals, t0)


def grasp_retract_case(tets, lift=0.03, ramp_s=0.3):
    """A jaw-sized top patch (the top node nearest the centre and the top nodes within 5 mm of
    it) lifted 30 mm over 0.3 s, then held."""
    t0 = time.perf_counter()

    def grasped(points):
        top = points[:, 2] >= points[:, 2].max() - 1e-9
        first = centre_top(points)[0]
        return top & (np.linalg.norm(points[:, :2] - points[first, :2], axis=1) <= 5e-3 + 1e-9)

    model = pad(SCENE_PAD, tets, fixed_extra=grasped)
    patch = np.flatnonzero(grasped(model.rest))
    assert patch.size, "no node to grasp"
    state = make_state(model)
    ramp = int(round(ramp_s / DT))

    def move(k, st):
        frac = min(1.0, (k + 1) / ramp)
        # Smooth (cosine) ramp, as a hand pulls: no velocity jump at the start or the end.
        st.x[patch, 2] = model.rest[patch, 2] + lift * 0.5 * (1 - np.cos(np.pi * frac))

    stable, error, tail, evals = settle(model, state, 1.0, None, on_step=move)
    x_fixed = model.rest.copy()
    x_fixed[patch, 2] += lift
    ref = static_equilibrium(model, x_fixed=x_fixed, increments=10)
    # Probe: the free top nodes next to the patch (what the tissue does around the jaws).
    top = np.flatnonzero((model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9) & ~model.fixed)
    near = top[np.argsort(np.linalg.norm(model.rest[top, :2] - model.rest[patch, :2].mean(0), axis=1))][:8]
    return static_row("pad_grasp_retract_30mm", model, state, ref, near, stable, error, tail, evals, t0)


def beam_case():
    t0 = time.perf_counter()
    model = beam(BEAM)
    state = make_state(model)
    stable, error, tail, evals = settle(model, state, 3.0)
    ref = static_equilibrium(model, increments=8)
    tip = np.flatnonzero(model.rest[:, 0] >= model.rest[:, 0].max() - 1e-9)
    return static_row("beam_15kPa_gravity", model, state, ref, tip, stable, error, tail, evals, t0)


def frequency_cases(tets):
    undamped = dict(damping=0.0, mass_damping=0.0)
    bm = beam(TissueMaterial(**{**BEAM.__dict__, **undamped}), gravity=False)
    pd = pad(TissueMaterial(**{**SCENE_PAD.__dict__, **undamped}), tets)
    pd.gravity[:] = 0.0
    pn = pad(TissueMaterial(**{**SCENE_PAD.__dict__, **undamped, "elasticity": "neohookean"}), tets)
    pn.gravity[:] = 0.0
    for case, model, seconds in (("beam_15kPa", bm, 3.0), ("scene_pad_30kPa", pd, 0.3),
                                 ("pad_30kPa", pn, 0.3)):
        f_ref, shape = first_mode(model)
        f_sim = ringing_frequency(model, lambda s, m=model: step(m, s, None, None, DT), shape,
                                  seconds, DT)
        yield {"bench": "tissue_accuracy", "kind": "frequency", "case": case,
               "elasticity": model.material.elasticity, "tets": model.tet_count,
               "f_hz": round(f_sim, 4), "f_ref_hz": round(f_ref, 4),
               "err": round(f_sim / f_ref - 1, 5)}


def model_top(model):
    return np.flatnonzero(model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9)


def drop_response(tets, dt, seconds, tol):
    model = pad(SCENE_PAD, tets, dt=dt, newton_tol=tol, newton_iters=8)
    top = model_top(model)
    state = make_state(model)
    sag = []
    for _ in range(int(round(seconds / dt))):
        step(model, state, None, None, dt)
        sag.append(-(state.x[top, 2] - model.rest[top, 2]).mean())
    sag = np.array(sag)
    final = sag[-1]
    outside = np.flatnonzero(np.abs(sag - final) > 0.01 * final)
    settle_s = (outside[-1] + 1) * dt if outside.size else 0.0
    return settle_s, float(max(0.0, sag.max() / final - 1.0)), final


def settling_case(tets):
    t0 = time.perf_counter()
    s1, o1, f1 = drop_response(tets, DT, 0.4, 1e-4)
    s_ref, o_ref, f_ref = drop_response(tets, DT / 10, 0.4, 1e-6)
    return {"bench": "tissue_accuracy", "kind": "settling", "case": "scene_pad_drop_under_gravity",
            "elasticity": SCENE_PAD.elasticity, "tets": pad(SCENE_PAD, tets, dt=None).tet_count,
            "settle_ms": round(s1 * 1e3, 2), "settle_ref_ms": round(s_ref * 1e3, 2),
            "settle_err": round(s1 / s_ref - 1, 4) if s_ref > 0 else None,
            "overshoot": round(o1, 5), "overshoot_ref": round(o_ref, 5),
            "sag_mm": round(f1 * 1e3, 5), "sag_ref_mm": round(f_ref * 1e3, 5),
            "wall_s": round(time.perf_counter() - t0, 1)}


def angular_momentum(model, state) -> np.ndarray:
    """About the centre of mass [kg m^2/s], (3,)."""
    c = (model.mass[:, None] * state.x).sum(axis=0) / model.mass.sum()
    return (model.mass[:, None] * np.cross(state.x - c, state.v)).sum(axis=0)


def spin_cases(omega=10.0, seconds=2.0):
    for law in ("corotated", "neohookean"):
        b = TissueModelBuilder(block((0.04, 0.03, 0.02), (4, 3, 2)),
                               TissueMaterial(young=30e3, damping=0.0, elasticity=law))
        b.gravity[:] = 0.0
        model = b.finalize(dt=DT)
        state = make_state(model)
        axis = np.array([0.0, 0.3, 1.0]) / np.linalg.norm([0.0, 0.3, 1.0])
        com = (model.mass[:, None] * model.rest).sum(axis=0) / model.mass.sum()
        state.v[:] = np.cross(omega * axis, model.rest - com)

        l0, e0 = angular_momentum(model, state), kinetic_energy(model, state)
        stable, error, _, evals = settle(model, state, seconds)
        row = {"bench": "tissue_accuracy", "kind": "spin", "case": f"free_block_{omega:g}rad_s",
               "elasticity": law, "tets": model.tet_count, "seconds": seconds,
               "d_angular_momentum": round(float(np.linalg.norm(angular_momentum(model, state) - l0)
                                                 / np.linalg.norm(l0)), 6),
               "d_kinetic_energy": round(kinetic_energy(model, state) / e0 - 1, 6),
               "evals_per_step": round(evals, 2), "stable": stable}
        if error:
            row["error"] = error
        yield row


def run_accuracy(tets: int, loads=(0.3, 0.5, 1.0, 2.0)) -> list[dict]:
    """Every case at one pad size; prints each JSON line as it is done and returns them."""
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    for row in point_load_cases(tets, loads, SOFT_PAD):
        emit(row)
    for row in point_load_cases(tets, (0.5, 2.0), SOFT_PAD_COROTATED):
        emit(row)
    emit(grasp_retract_case(tets))
    emit(beam_case())
    for row in frequency_cases(tets):
        emit(row)
    emit(settling_case(tets))
    for row in spin_cases():
        emit(row)
    return rows
