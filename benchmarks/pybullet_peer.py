"""PyBullet peer benchmark: the same tet mesh as a PyBullet (Bullet 3) deformable body.

`run_pybullet_block` loads a `TetMesh` into PyBullet's deformable world, clamps its bottom face,
lets it sag under gravity and times `stepSimulation()`. It is the "other engine" row of the
block benchmark, so the parameter mapping below is chosen to make the comparison fair. Source
references are to the Bullet 3 repository (github.com/bulletphysics/bullet3) that PyBullet 3.2.x
is built from; "measured" marks what was checked by running PyBullet 3.2.7 here.

Mesh loading (src/BulletSoftBody/btSoftBodyHelpers.cpp, ``CreateFromVtkFile``)
    A line-oriented legacy-ASCII VTK reader: after ``POINTS n ...`` every non-empty line is ONE
    point (x y z); after ``CELLS m ...`` every line is one cell that must start with ``4``
    (otherwise "Only Tetrahedra are supported"); ``CELL_TYPES`` ends reading. meshio's writer
    does not fit (it puts many points on one line and, by default, writes VTK 5.1
    OFFSETS/CONNECTIVITY), and numpy-2 scalar ``repr`` ("np.float64(...)") silently parses as 0,
    so the file is written here with ``%.17g``. Nodes are created in file order
    (``new btSoftBody(..., n_points, &X[0], 0)``), so PyBullet node index == our node index;
    `run_pybullet_block` checks this at load time against ``getMeshData(...,
    MESH_DATA_SIMULATION_MESH)`` (same count, positions equal to 1e-9 m).

Material (src/BulletSoftBody/btDeformableNeoHookeanForce.h)
    ``loadSoftBody(useNeoHookean=1, NeoHookeanMu=a, NeoHookeanLambda=b, NeoHookeanDamping=k)``
    builds ``btDeformableNeoHookeanForce(a, b, k)`` (examples/SharedMemory/
    PhysicsServerCommandProcessor.cpp, ``processDeformable``). Its energy is the Smith et al.
    2018 "Stable Neo-Hookean" one, with a and b used as given, no internal re-parametrisation::

        psi = a/2 (I_C - 3) + b/2 (J - 1 - 3a/(4b))^2 - a/2 log(I_C + 1)

    (``elasticEnergyDensity``; ``firstPiola``: P = a(1 - 1/(I_C+1)) F + (b(J-1) - 3a/4) cof F).
    Linearising P at F = I gives P = (3a/4)(H + H^T) + (b - 5a/8) tr(H) I, i.e. small-strain
    Lamé parameters mu = 3a/4 and lambda = b - 5a/8. To match the small-strain (E, nu) of our
    linear FEM we therefore pass a = 4/3 mu and b = lambda + 5/6 mu (as in Smith et al.), where
    mu = E/(2(1+nu)) and lambda = E nu/((1+nu)(1-2nu)). Passing mu and lambda directly would
    make PyBullet's block ~25% softer in shear (for nu = 0.45: E_eff ~ 0.75 E).

Damping
    ``NeoHookeanDamping=k`` sets mu_damp = k a and lambda_damp = k b and adds the viscous stress
    Q = mu_damp (dF + dF^T) + lambda_damp tr(dF) I with dF = d/dt F (``addScaledDampingForce``):
    stiffness-proportional (Rayleigh beta) damping with beta ~ k seconds relative to the
    *Bullet* parameters (so ~4/3 k in shear relative to the matched small-strain mu).

Mass (btSoftBody.cpp ``setTotalMass``; PhysicsServerCommandProcessor.cpp)
    Every node is created with mass 1, then ``psb->setTotalMass(mass)`` rescales uniformly: each
    node gets mass/n -- NOT volume-lumped. ``createSoftBodyAnchor(body, node, -1, -1)`` stores the
    node mass and calls ``setMass(node, 0)``: the node is fixed and its share of the weight is
    dropped. With uniform masses the clamped bottom layer swallows n_bottom/n of the weight,
    versus its (smaller) lumped-volume share in a lumped-mass FEM, so PyBullet's gravity load on
    the free nodes differs from ours; the notes string reports both fractions. It also moves
    weight towards the top and the edges: on the clamped 10x6x2 cm block this makes the sag
    8-23% larger (20k-1k tets) than a consistent-load linear FEM, while a linear FEM given
    PyBullet's uniform nodal load agrees with PyBullet to 0.4% (measured when this was written).

Integrator and solver settings (btDeformableBodySolver.cpp, btDeformableBackwardEulerObjective.cpp,
btDeformableMultiBodyDynamicsWorld.cpp)
    The deformable world is constructed with m_implicit = false, m_lineSearch = false,
    m_useProjection = false, and PyBullet exposes no switch for them: elastic forces and gravity
    are applied explicitly (``applyExplicitForce``), only the damping force is solved implicitly,
    (M - dt D) dv = dt f_damp, with a mass-preconditioned conjugate-residual solver (at most
    300 iterations, stops when the max-norm of the preconditioned residual < 1e-6). For an
    undamped mode this symplectic-Euler scheme needs dt < 2/omega_max; with implicit damping
    c = beta omega^2 a mode is stable for any omega once beta > dt/2 -- which is why a nonzero
    ``damping`` is needed at dt = 1e-3 (measured: damping = 0 blows up within 350 steps on the
    1k and 5k blocks, 0.001 is stable). The solve's iteration count, hence the step cost, depends
    on the state (it stops early when the residual is already small). ``setPhysicsEngineParameter``
    knobs are left at PyBullet's defaults: numSubSteps = 0 (one internal step of dt per
    stepSimulation), numSolverIterations = 50 (rigid/contact solver only; no contacts here).
    ``m_cfg.drag`` stays 0.

Sleeping (btSoftBody.cpp ``updateDeactivation``/``wantsSleeping``)
    A soft body whose max node speed stays below m_sleepingThreshold (0.04 m/s, set in
    ``initDefaults``) for gDeactivationTime (2 s) goes to ISLAND_SLEEPING and its forces and solve
    are skipped. A block sagging under its own weight stays below that speed, so with PyBullet's
    defaults it falls asleep after 2 s of simulated time (2000 steps at dt = 1e-3) and each step
    becomes ~4x cheaper (measured). We call ``changeDynamics(body, -1,
    activationState=ACTIVATION_STATE_DISABLE_SLEEPING)`` (PhysicsServerCommandProcessor.cpp:
    ``forceActivationState(DISABLE_DEACTIVATION)``) so every timed step does the full work, as it
    would for tissue under continuous instrument contact. This is the one non-default setting.

Collision
    No other bodies exist, self-collision is off, so no contacts are generated; the per-step
    broadphase/node-tree update of the soft body is still paid and is part of the timing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

from sim.mesh import TetMesh, tet_volumes

_FACE_TOL = 1e-9  # [m] a node lies on the bottom/top face if |z - z_min/max| <= this
_LOAD_TOL = 1e-9  # [m] allowed difference between PyBullet's loaded node positions and ours


def run_pybullet_block(
    mesh: TetMesh,
    *,
    young: float,
    poisson: float,
    density: float,
    damping: float,
    dt: float,
    settle_steps: int,
    steps: int,
    repeats: int = 1,
    gravity: float = 9.81,
) -> dict:
    """Simulate `mesh` as a PyBullet Neo-Hookean deformable body clamped at its bottom face.

    Args:
        mesh: the tet mesh [m]; its nodes with z == min z (within 1e-9 m) are anchored.
        young, poisson: small-strain Young's modulus [Pa] and Poisson ratio; mapped to PyBullet's
            stable Neo-Hookean parameters so its small-strain Lamé parameters match (module doc).
        density: [kg/m^3]; PyBullet gets mass = density * total tet volume, spread uniformly.
        damping: PyBullet's NeoHookeanDamping (stiffness-proportional, ~seconds).
        dt: time step [s]; settle_steps: untimed steps before timing.
        steps, repeats: `repeats` timed runs of `steps` steps each, continuing one simulation.
        gravity: [m/s^2], applied along -z.

    Returns:
        dict with engine, tets, nodes, median_us, p99_us (over all pooled timed steps), step_us
        (every timed step [us]), sag_mm (mean downward displacement of the top-face nodes after
        settling and timing [mm], positive = down), stable (all positions finite and no node moved
        more than 10x the block height) and notes (parameter mapping, mass distribution).
    """
    points = np.ascontiguousarray(mesh.points, dtype=np.float64)
    tets = np.ascontiguousarray(mesh.tets, dtype=np.int64)
    n, m = points.shape[0], tets.shape[0]
    if min(steps, repeats) < 1 or settle_steps < 0:
        raise ValueError(f"need steps >= 1, repeats >= 1, settle_steps >= 0; got "
                         f"steps={steps}, repeats={repeats}, settle_steps={settle_steps}")
    if not (young > 0 and -1.0 < poisson < 0.5 and density > 0 and dt > 0 and damping >= 0):
        raise ValueError(f"bad material/step parameters: young={young}, poisson={poisson}, "
                         f"density={density}, damping={damping}, dt={dt}")

    mu = young / (2.0 * (1.0 + poisson))
    lam = young * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    bt_mu, bt_lambda = _bullet_neohookean_params(mu, lam)
    volume = float(tet_volumes(points, tets).sum())
    mass = density * volume

    z = points[:, 2]
    bottom = np.flatnonzero(np.abs(z - z.min()) <= _FACE_TOL)
    top = np.flatnonzero(np.abs(z - z.max()) <= _FACE_TOL)
    height = float(z.max() - z.min())

    fd, path = tempfile.mkstemp(prefix="trocar_pybullet_", suffix=".vtk")
    os.close(fd)
    cid = None
    try:
        _write_vtk_tetra(path, points, tets)
        with _quiet_c_stdout():  # pybullet prints a banner on import and node counts on load
            import pybullet as p

            cid = p.connect(p.DIRECT)
            p.resetSimulation(p.RESET_USE_DEFORMABLE_WORLD, physicsClientId=cid)
            # Gravity before loading: processDeformable builds the body's gravity force from the
            # world gravity at load time.
            p.setGravity(0.0, 0.0, -gravity, physicsClientId=cid)
            p.setTimeStep(dt, physicsClientId=cid)
            body = p.loadSoftBody(
                path,
                basePosition=[0.0, 0.0, 0.0],
                scale=1.0,
                mass=mass,
                useNeoHookean=1,
                NeoHookeanMu=bt_mu,
                NeoHookeanLambda=bt_lambda,
                NeoHookeanDamping=damping,
                useMassSpring=0,
                useBendingSprings=0,
                useSelfCollision=0,
                useFaceContact=0,
                collisionMargin=1e-4,
                frictionCoeff=0.5,
                physicsClientId=cid,
            )
        if body < 0:
            raise RuntimeError(f"PyBullet could not load the tet mesh from {path}")

        rest = _node_positions(p, body, cid)
        if rest.shape != (n, 3):
            raise RuntimeError(f"PyBullet loaded {rest.shape[0]} nodes, mesh has {n}")
        load_err = float(np.abs(rest - points).max())
        if load_err > _LOAD_TOL:
            raise RuntimeError(f"PyBullet node positions differ from the mesh by {load_err:.3g} m "
                               "(node order or VTK parsing mismatch)")

        for i in bottom:
            p.createSoftBodyAnchor(body, int(i), -1, -1, physicsClientId=cid)
        # A soft body whose max node speed stays below m_sleepingThreshold (0.04 m/s) for
        # gDeactivationTime (2 s) is put to sleep and then skipped by the solver: a sagging block
        # falls asleep after ~2 s and steps become ~4x cheaper. Keep it awake, as a simulator
        # under haptic interaction would be.
        p.changeDynamics(body, -1, activationState=p.ACTIVATION_STATE_DISABLE_SLEEPING,
                         physicsClientId=cid)

        for _ in range(settle_steps):
            p.stepSimulation(physicsClientId=cid)

        step_ns = np.empty(steps * repeats, dtype=np.int64)
        clock = time.perf_counter_ns
        k = 0
        for _ in range(repeats):
            for _ in range(steps):
                t0 = clock()
                p.stepSimulation(physicsClientId=cid)
                step_ns[k] = clock() - t0
                k += 1

        final = _node_positions(p, body, cid)
    finally:
        if cid is not None:
            with contextlib.suppress(Exception):
                p.disconnect(physicsClientId=cid)
        with contextlib.suppress(OSError):
            os.remove(path)

    step_us = step_ns / 1e3
    finite = bool(np.isfinite(final).all())
    moved = float(np.linalg.norm(final - points, axis=1).max()) if finite else float("inf")
    stable = finite and moved <= 10.0 * height
    sag_mm = float(-np.mean(final[top, 2] - points[top, 2]) * 1e3) if finite else float("nan")

    # Share of the weight carried by free (non-anchored) nodes: PyBullet (uniform node mass)
    # versus a volume-lumped mass matrix on the same mesh.
    lumped = np.zeros(n)
    np.add.at(lumped, tets.reshape(-1), np.repeat(tet_volumes(points, tets) / 4.0, 4))
    free_uniform = 1.0 - bottom.size / n
    free_lumped = 1.0 - float(lumped[bottom].sum()) / volume

    notes = (
        f"pybullet {_pybullet_version()} deformable world; Smith-2018 stable Neo-Hookean with "
        f"NeoHookeanMu={bt_mu:.6g}, NeoHookeanLambda={bt_lambda:.6g} (= 4/3 mu, lambda + 5/6 mu, "
        f"so small-strain mu={mu:.6g} Pa, lambda={lam:.6g} Pa match E={young:g}, nu={poisson:g}); "
        f"NeoHookeanDamping={damping:g} (viscous stress damping*(mu_bt*(dF+dF^T) + "
        f"lambda_bt*tr(dF) I)); mass={mass:.6g} kg spread UNIFORMLY ({mass / n:.4g} kg/node, not "
        f"volume-lumped); {bottom.size} bottom nodes anchored (mass set to 0), so free nodes "
        f"carry {free_uniform:.1%} of the weight vs {free_lumped:.1%} with lumped mass; "
        f"semi-implicit solver (explicit elasticity, implicit damping, conjugate residual <= 300 "
        f"its); sleeping disabled (else the body deactivates after 2 s and steps get ~4x "
        f"cheaper), PyBullet defaults otherwise (numSubSteps=0); dt={dt:g} s, "
        f"settle={settle_steps}, "
        f"timed {repeats}x{steps} steps; node order/positions verified at load "
        f"(max err {load_err:.1e} m); sag = mean top-face z drop over {top.size} nodes"
    )
    return {
        "engine": "pybullet",
        "tets": int(m),
        "nodes": int(n),
        "median_us": float(np.median(step_us)),
        "p99_us": float(np.percentile(step_us, 99)),
        "step_us": step_us.tolist(),
        "sag_mm": sag_mm,
        "stable": stable,
        "notes": notes,
    }


def _bullet_neohookean_params(mu: float, lam: float) -> tuple[float, float]:
    """PyBullet (NeoHookeanMu, NeoHookeanLambda) whose small-strain Lamé parameters are (mu, lam).

    Bullet's stable Neo-Hookean linearises to mu_0 = 3/4 a, lambda_0 = b - 5/8 a (module doc).
    """
    return 4.0 / 3.0 * mu, lam + 5.0 / 6.0 * mu


def _write_vtk_tetra(path: str, points: np.ndarray, tets: np.ndarray) -> None:
    """Legacy-ASCII VTK unstructured grid in the one-item-per-line form Bullet's reader needs."""
    with open(path, "w", encoding="ascii") as f:
        f.write("# vtk DataFile Version 2.0\ntrocar tet mesh\nASCII\nDATASET UNSTRUCTURED_GRID\n")
        f.write(f"POINTS {points.shape[0]} double\n")
        np.savetxt(f, points, fmt="%.17g")
        f.write(f"\nCELLS {tets.shape[0]} {5 * tets.shape[0]}\n")
        cells = np.hstack([np.full((tets.shape[0], 1), 4, dtype=np.int64), tets])
        np.savetxt(f, cells, fmt="%d")
        f.write(f"\nCELL_TYPES {tets.shape[0]}\n")
        np.savetxt(f, np.full(tets.shape[0], 10, dtype=np.int64), fmt="%d")


def _node_positions(p, body: int, cid: int) -> np.ndarray:
    """Simulation-mesh node positions [m], shape (n, 3), in PyBullet's node order."""
    count, verts = p.getMeshData(body, -1, flags=p.MESH_DATA_SIMULATION_MESH, physicsClientId=cid)
    out = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    if out.shape[0] != count:
        raise RuntimeError(f"getMeshData returned {out.shape[0]} positions for {count} nodes")
    return out


def _pybullet_version() -> str:
    try:
        return metadata.version("pybullet")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet_c_stdout():
    """Send file descriptor 1 to /dev/null, flushing C stdio before restoring it."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
