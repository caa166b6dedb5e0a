"""Soft tissue, the part that changes every tick: `TissueState`, the step's inputs
(`TissueControl`, `TissueContacts`) and `step()`; the model it steps (`TissueModel`, its builder, the
factored `TissueSystem`) is `sim.tissue_model`.

Built like Newton/MuJoCo: a builder's `finalize()` makes the model once; `make_state()` makes the
state; `step(model, state, control, contacts, dt)` advances the state in place. The method (see
`sim.tissue_solver` and docs/tissue-solver.md): linear tets, co-rotational or stable neo-Hookean
elasticity (`sim.tissue_elements`), BDF2 time steps solved by a few Newton-type iterations on the
incremental potential with a prefactored, node-rotated rest system matrix and a line search.

Units: m, s, kg, N, Pa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.tissue_elements import element_pass
from sim.tissue_kernels import quat_to_mat
from sim.tissue_model import NO_FRAMES, TissueModel, TissueModelBuilder
from sim.tissue_solver import step_kernel
from sim.tissue_tethers import EMPTY as NO_TETHERS


class TissueDivergedError(RuntimeError):
    """The tissue state became non-physical (NaN/inf or runaway speed); the step is not trusted."""


@dataclass(eq=False)
class TissueControl:
    """Inputs to the tissue for one step.

    Attributes:
        force: external node loads [N], shape (n, 3) (e.g. a weight on the top face).
    """

    force: np.ndarray

    @staticmethod
    def zeros(model: TissueModel) -> TissueControl:
        return TissueControl(np.zeros((model.node_count, 3)))


@dataclass(eq=False)
class TissueContacts:
    """Per-step contact results from the tool-tissue stage (filled outside the tissue step).

    Attributes:
        force: contact forces on the nodes [N], shape (n, 3); their reaction goes to the tools.
    """

    force: np.ndarray

    @staticmethod
    def zeros(model: TissueModel) -> TissueContacts:
        return TissueContacts(np.zeros((model.node_count, 3)))


@dataclass(eq=False)
class TissueState:
    """Everything about a tissue body that changes in the loop, plus the step's scratch arrays.

    Attributes (dynamic: `DYNAMIC` names what a snapshot must copy to continue bit-identically):
        x: node positions [m], shape (n, 3).
        v: node velocities [m/s], shape (n, 3).
        q: per-element rotation (unit quaternion rows w, x, y, z), warm start, shape (4, m).
        x_prev, v_prev: positions [m] and velocities [m/s] one step back (BDF2 history), (n, 3).
        x_last, v_last: x and v as the last step wrote them, (n, 3); a node whose x or v differs
            (reset, teleport, contact projection) restarts its history, and its elements'
            carried evaluation is recomputed from positions.
        fs (9, m): each element's F at x; gs (9, m): grad(x - x_p) of the next step's predictor;
        force (9, m) [N], energy (m,) [J], weight (m,) [m^3]: the next step's element corner
            forces and energies at x and the volumes of the elements not inverted. The evaluation
            the next step starts from (docs/tissue-solver.md, "One pass per tick").
        carried: whether fs ... weight belong to x (False: the next step re-evaluates every
            element; set it False after changing an element's material or the mesh).
        step_hint: the first step length the next step's line search tries (1 unless the body
            settled with a shortened step: `sim.tissue_solver.next_hint`).
        time: simulated time [s]; step_count: steps taken.
        inverted: elements with det F <= 0 at the last step.
        max_speed: largest node speed at the last step [m/s].
        iterations, evaluations: solves and element passes of the last step; refreshed: elements
            re-evaluated from positions at its start.
    Scratch (overwritten each step): qt (4, m), f, gn (9, m) the step's end rotations, F and
    next-step damping gradients (swapped with q, fs, gs after the step: do not keep references
    to these arrays across steps), xp, y (n, 3) [m] BDF2 predictor and inertial target, dx (n, 3)
    [m] search direction, pz (n, 3) [m] preconditioned residual, r_prev (n, 3) [N s^2] last
    iteration's residual, fb, df (9, m) a further iteration's base F and grad(dx), f_cur (9, m)
    [N] this step's corner forces (a further iteration only), e_trial (m,) [J] trial energies,
    grad (18, m) (`element_pass`), r_node (n, 3, 3) node frames, res (n, 3) [N s^2] residual, rhs
    (free nodes, 3) factor-ordered right-hand side, node_e (n,) [J s^2], fresh (n,) nodes
    restarted, f_sum (n, 3) [N].
    """

    DYNAMIC = ("x", "v", "q", "x_prev", "v_prev", "x_last", "v_last", "fs", "gs", "force",
               "energy", "weight", "carried", "step_hint")
    #: Per-step scratch: recomputed in every step before being read (not hashed in a checksum).
    SCRATCH = ("qt", "f", "gn", "xp", "y", "dx", "pz", "r_prev", "fb", "df", "f_cur", "e_trial",
               "grad", "r_node", "res", "rhs", "node_e", "fresh", "f_sum")

    x: np.ndarray
    v: np.ndarray
    q: np.ndarray
    x_prev: np.ndarray
    v_prev: np.ndarray
    x_last: np.ndarray
    v_last: np.ndarray
    fs: np.ndarray
    gs: np.ndarray
    force: np.ndarray
    energy: np.ndarray
    weight: np.ndarray
    qt: np.ndarray
    f: np.ndarray
    gn: np.ndarray
    xp: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    pz: np.ndarray
    r_prev: np.ndarray
    fb: np.ndarray
    df: np.ndarray
    f_cur: np.ndarray
    e_trial: np.ndarray
    grad: np.ndarray
    r_node: np.ndarray
    res: np.ndarray
    rhs: np.ndarray
    node_e: np.ndarray
    fresh: np.ndarray
    f_sum: np.ndarray
    carried: bool = False
    step_hint: float = 1.0
    time: float = 0.0
    step_count: int = 0
    inverted: int = 0
    max_speed: float = 0.0
    iterations: int = 0
    evaluations: int = 0
    refreshed: int = 0


def make_state(model: TissueModel, x: np.ndarray | None = None) -> TissueState:
    """A state at rest (or at positions x [m], (n, 3)), rotations fully extracted, no history."""
    n, m = model.node_count, model.tet_count
    q = np.zeros((4, m))
    q[0] = 1.0

    def nodes():
        return np.zeros((n, 3))

    def rows(k):
        return np.zeros((k, m))

    state = TissueState(
        x=np.array(model.rest if x is None else x, dtype=np.float64, order="C"),
        v=nodes(), q=q, x_prev=nodes(), v_prev=nodes(),
        # NaN never equals anything: the first step starts every node's history afresh.
        x_last=np.full((n, 3), np.nan), v_last=np.full((n, 3), np.nan),
        fs=rows(9), gs=rows(9), force=rows(9), energy=np.zeros(m), weight=np.zeros(m),
        qt=q.copy(), f=rows(9), gn=rows(9), xp=nodes(), y=nodes(), dx=nodes(), pz=nodes(),
        r_prev=nodes(), fb=rows(9), df=rows(9), f_cur=rows(9), e_trial=np.zeros(m),
        grad=rows(18), r_node=np.zeros((n, 3, 3)), res=nodes(),
        rhs=np.zeros((int((~model.fixed).sum()), 3)), node_e=np.zeros(n),
        fresh=np.zeros(n, dtype=np.bool_), f_sum=nodes(),
    )
    converge_rotations(model, state)
    return state


def converge_rotations(model: TissueModel, state: TissueState, iters: int = 100) -> None:
    """Re-extract the element rotations from scratch (after a teleport or a reset); leaves the
    elastic corner forces at state.x in state.force (and the next step re-evaluates every
    element)."""
    state.carried = False
    state.step_hint = 1.0
    state.q[:] = 0.0
    state.q[0] = 1.0
    element_pass(model.tets_u, model.dm_inv_rows, model.volume, model.mu, model.lam,
                 model.elasticity, state.x, state.x, state.q, state.q, 0.0, iters, state.grad,
                 state.force, state.weight, state.energy)


def elastic_forces(model: TissueModel, state: TissueState, iters: int = 100) -> np.ndarray:
    """Elastic node forces [N], (n, 3), at state.x with converged rotations (the model's law)."""
    converge_rotations(model, state, iters)
    corners = state.force.T.reshape(-1, 3, 3)
    f = np.zeros((model.node_count, 3))
    np.add.at(f, model.tets[:, 1:].reshape(-1), corners.reshape(-1, 3))
    np.add.at(f, model.tets[:, 0], -corners.sum(axis=1))
    return f


def elastic_energy(model: TissueModel, state: TissueState, iters: int = 100) -> float:
    """Elastic energy [J] at state.x with converged rotations (the model's law)."""
    converge_rotations(model, state, iters)
    return float(state.energy.sum())


def element_stress(model: TissueModel, state: TissueState) -> np.ndarray:
    """Co-rotated small-strain von Mises stress of each element [Pa], shape (m,), at state.x with
    the rotations of the last step (for either elastic law: a damage/metrics measure).

    Computed on demand (NumPy) for damage and metrics at display rate; the 1 kHz step does not
    pay for it.
    """
    p = state.x[model.tets]
    f = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1) @ model.dm_inv
    # The kernel's own quaternion -> matrix formula, evaluated on whole (m,) rows by NumPy.
    r = np.stack(quat_to_mat.py_func(*state.q), axis=1).reshape(-1, 3, 3)
    g = r.transpose(0, 2, 1) @ f
    eps = 0.5 * (g + g.transpose(0, 2, 1)) - np.eye(3)
    sigma = 2 * model.mu[:, None, None] * eps + (model.lam * np.trace(eps, axis1=1, axis2=2))[
        :, None, None] * np.eye(3)
    dev = sigma - np.trace(sigma, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    return np.sqrt(1.5 * np.sum(dev * dev, axis=(1, 2)))


def step(model: TissueModel, state: TissueState, control: TissueControl | None,
         contacts: TissueContacts | None, dt: float, tethers: tuple | None = None) -> None:
    """Advance `state` by dt [s] in place; tethers: (groups, nodes, counts, templates,
    stiffnesses, rotations) held in the step's potential (`sim.tissue_tethers`; a clip's jaws).

    Raises TissueDivergedError if any node becomes NaN/inf or faster than model.max_speed; the
    caller must then zero the forces it sends to a device and reset or discard this state.
    """
    system = model.system(dt)
    mat = model.material
    if control is not None and contacts is not None:
        f_ext = np.add(control.force, contacts.force, out=state.f_sum)
    elif control is not None:
        f_ext = control.force
    elif contacts is not None:
        f_ext = contacts.force
    else:
        f_ext = state.f_sum
        f_ext.fill(0.0)
    fac = system.factor
    s = state
    if s.rhs.shape[0] != fac.d_inv.shape[0]:  # a topology change swapped the factor (docs/cutting.md)
        s.rhs = np.zeros((fac.d_inv.shape[0], 3))
    inverted, vmax, bad, iters, evals, refreshed, hint = step_kernel(
        model.tets_u, model.dm_inv_rows, model.volume, model.mu, model.lam, model.elasticity,
        model.mass, model.gravity, model.node_ptr, model.node_inc, model.node_rep, system.fpos,
        fac.l_ptr, fac.l_col, fac.l_val, fac.d_inv, float(dt), mat.damping, mat.mass_damping,
        model.polar_iters, model.newton_iters, model.newton_tol * 2.0 * dt / 3.0,
        math.sin(0.5 * model.turn_tol * dt) ** 2, f_ext,
        s.x, s.v, s.q, s.x_prev, s.v_prev, s.x_last, s.v_last, s.fs, s.gs, s.force, s.energy,
        s.weight, s.carried, s.qt, s.f, s.gn, s.xp, s.y, s.dx, s.pz, s.r_prev, s.fb, s.df,
        s.f_cur, s.e_trial, s.r_node, s.res, s.rhs, s.node_e, s.fresh,
        NO_FRAMES if system.frames is None else system.frames,
        *(NO_TETHERS if tethers is None else tethers), s.step_hint,
    )
    # The step's end rotations, F and next-step damping gradients are in qt, f, gn: swap.
    s.q, s.qt = s.qt, s.q
    s.fs, s.f = s.f, s.fs
    s.gs, s.gn = s.gn, s.gs
    state.carried = True
    state.step_hint = hint
    state.inverted = inverted
    state.iterations = iters
    state.evaluations = evals
    state.refreshed = refreshed
    state.time += dt
    state.step_count += 1
    state.max_speed = vmax
    if bad:
        raise TissueDivergedError(
            f"tissue diverged at step {state.step_count} (t = {state.time:.4f} s): {bad} node(s) "
            "have NaN/inf velocity"
        )
    if vmax > model.max_speed:
        raise TissueDivergedError(
            f"tissue diverged at step {state.step_count} (t = {state.time:.4f} s): node speed "
            f"{vmax:.3g} m/s exceeds {model.max_speed} m/s (energy blow-up)"
        )


def kinetic_energy(model: TissueModel, state: TissueState) -> float:
    """Kinetic energy [J]."""
    return 0.5 * float(np.sum(model.mass[:, None] * state.v * state.v))


def warmup() -> float:
    """Compile (or load from cache) every tissue kernel before a loop starts; returns seconds."""
    import time

    from sim.mesh_generators import block

    t0 = time.perf_counter()
    model = TissueModelBuilder(block((0.01, 0.01, 0.01), (1, 1, 1))).fix_below(0.0).finalize()
    state = make_state(model)
    control = TissueControl.zeros(model)
    step(model, state, control, None, 1e-3)
    step(model, state, control, TissueContacts.zeros(model), 1e-3)
    return time.perf_counter() - t0
