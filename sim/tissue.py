"""Soft tissue: `TissueModel` (static), `TissueState` (changes every tick) and `step()`.

Built like Newton/MuJoCo: a builder's `finalize()` makes the model once; `make_state()` makes the
state; `step(model, state, control, contacts, dt)` advances the state in place. The method (see
`sim.tissue_solver` and docs/tissue-solver.md): linear tets, co-rotational or stable neo-Hookean
elasticity (`sim.tissue_elements`), BDF2 time steps solved by a few Newton-type iterations on the
incremental potential with a prefactored, node-rotated rest system matrix and a line search.

Units: m, s, kg, N, Pa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from sim import fem
from sim.mesh import TetMesh, validate
from sim.sparse_factor import BlockLDLFactor, factor_spd_blocked
from sim.tissue_elements import ELASTICITY_CODES, element_pass
from sim.tissue_kernels import quat_to_mat
from sim.tissue_solver import step_kernel
from sim.tissue_tethers import EMPTY as NO_TETHERS

GRAVITY = (0.0, 0.0, -9.81)
NO_FRAMES = np.zeros((0, 4))  # a rest-assembled step matrix's node frames (`TissueSystem.frames`)


class TissueDivergedError(RuntimeError):
    """The tissue state became non-physical (NaN/inf or runaway speed); the step is not trusted."""


@dataclass(frozen=True)
class TissueMaterial:
    """Homogeneous isotropic material.

    Attributes:
        young: Young's modulus [Pa].
        poisson: Poisson's ratio [-], in (-1, 0.5).
        density: mass density [kg/m^3].
        damping: stiffness-proportional (Rayleigh beta) damping [s]; the viscous stress is
            damping * (elastic stress rate). Same meaning as PyBullet's NeoHookeanDamping.
        mass_damping: mass-proportional (Rayleigh alpha) damping [1/s], drag against the world.
        elasticity: 'corotated' (co-rotational linear: large rotations, small strains) or
            'neohookean' (stable neo-Hookean: also resists inversion under strong compression,
            for tissue that tools press and pinch). Both have the small-strain stiffness of
            (young, poisson); see `sim.tissue_elements`.
    """

    young: float = 10e3
    poisson: float = 0.45
    density: float = 1000.0
    damping: float = 0.01
    mass_damping: float = 0.0
    elasticity: str = "corotated"

    def __post_init__(self):
        if not self.young > 0:
            raise ValueError(f"Young's modulus must be > 0 Pa, got {self.young}")
        if not -1.0 < self.poisson < 0.5:
            raise ValueError(f"Poisson's ratio must be in (-1, 0.5), got {self.poisson}")
        if not self.density > 0:
            raise ValueError(f"density must be > 0 kg/m^3, got {self.density}")
        if not (self.damping >= 0 and self.mass_damping >= 0):
            raise ValueError("damping coefficients must be >= 0")
        if self.elasticity not in ELASTICITY_CODES:
            raise ValueError(f"elasticity must be one of {sorted(ELASTICITY_CODES)}, "
                             f"got {self.elasticity!r}")

    @property
    def lame(self) -> tuple[float, float]:
        """(mu, lambda) [Pa]."""
        return fem.lame(self.young, self.poisson)


@dataclass(eq=False)
class TissueModel:
    """Everything about a tissue body that the loop never changes.

    Attributes:
        rest: rest node positions [m], shape (n, 3).
        tets: tetrahedra, shape (m, 4), int32, positively oriented.
        surface: outward boundary triangles for contact and rendering, shape (k, 3), int32.
        mass: lumped node masses [kg], shape (n,).
        fixed: nodes held at their rest position, shape (n,), bool.
        material: the material the per-element arrays were made from.
        mu, lam: Lamé parameters per element [Pa], shape (m,).
        dm_inv: inverse rest edge matrices [1/m], shape (m, 3, 3).
        dm_inv_rows: the same, one row per matrix entry (row-major), shape (9, m), for the kernels.
        volume: rest volumes [m^3], shape (m,).
        gravity: gravitational acceleration [m/s^2], shape (3,).
        node_ptr, node_inc: node -> (element*4 + local corner) incidence, CSR, uint32.
        node_rep: one element adjacent to each node, whose rotation is the node's frame when
            every adjacent element is inverted, shape (n,), uint32.
        tets_u: `tets` as uint32 for the kernels.
        elasticity: the material's elastic law as a kernel code (`sim.tissue_elements`).
        polar_iters: rotation-extraction iterations per energy evaluation (warm-started, and a
            step evaluates 1-3 times, so rotations keep up with fast spins and converge at rest).
        newton_iters: most Newton-type iterations per step (each: one block solve, one gather of
            the direction and one or more element passes). A step iterates again only where
            its line search had to shorten the step or an element turned faster than turn_tol;
            otherwise what is left is carried into the next step.
        newton_tol: [m/s] a move whose largest node move, divided by h' = 2 dt / 3, is below
            this is accepted without an energy check and ends the step (the quadratic model is
            exact to far below that; its element pass is still made: it starts the next step).
        turn_tol: [rad/s] turn rate of the body (elements' RMS, volume-weighted) above which a step
            iterates again (a fast spin; at 2 rad/s one iteration keeps a spinning block's
            angular momentum as well as three).
        max_speed: node speed [m/s] above which a step is declared diverged.
        cut_front: after a cut, the nodes on the cut surface that were not split (the crack
            tip), shape (n,), bool; the next snip continues the cut from them
            (`sim.tissue_topology`). None before any cut.
        springs: stiffness [N/m] of persistent constraints, (3k, 3k) sparse over the first k <= n
            nodes, added to the factored step matrix only (the tethers of clips: their forces come
            from `sim.tissue_tethers` in the step); None: none.
    """

    rest: np.ndarray
    tets: np.ndarray
    surface: np.ndarray
    mass: np.ndarray
    fixed: np.ndarray
    material: TissueMaterial
    mu: np.ndarray
    lam: np.ndarray
    dm_inv: np.ndarray
    dm_inv_rows: np.ndarray
    volume: np.ndarray
    gravity: np.ndarray
    node_ptr: np.ndarray
    node_inc: np.ndarray
    node_rep: np.ndarray
    tets_u: np.ndarray
    elasticity: int = 0
    polar_iters: int = 2
    newton_iters: int = 6
    newton_tol: float = 1e-4
    turn_tol: float = 2.0
    max_speed: float = 20.0
    cut_front: np.ndarray | None = None
    springs: sp.spmatrix | None = None
    _systems: dict = field(default_factory=dict, repr=False)

    @property
    def node_count(self) -> int:
        return int(self.rest.shape[0])

    @property
    def tet_count(self) -> int:
        return int(self.tets.shape[0])

    def stiffness(self) -> sp.csr_matrix:
        """Rest (linear) stiffness matrix K [N/m], (3n, 3n), DOF 3*node+axis, of the live elements
        (a cut or tear leaves dead ones with volume 0: docs/cutting.md), from the elements' rest
        shapes `dm_inv_rows`."""
        live = np.flatnonzero(self.volume > 0.0)
        dm = np.ascontiguousarray(self.dm_inv_rows[:, live].T).reshape(-1, 3, 3)
        return fem.stiffness_from_shapes(dm, self.volume[live], self.tets[live], self.node_count,
                                         self.mu[live], self.lam[live])

    def system(self, dt: float) -> TissueSystem:
        """The factored step matrix for time step dt [s]; factored on first use, then cached."""
        sys_ = self._systems.get(dt)
        if sys_ is None:
            sys_ = self._systems[dt] = TissueSystem.build(self, dt)
        return sys_

    def use_system(self, system: TissueSystem) -> None:
        """Make `system` the step matrix for its dt (after a topology change: a stale factor
        extended to new nodes, then the rebuilt one; `sim.tissue_topology`)."""
        self._systems[system.dt] = system

    def with_topology(self, **arrays) -> TissueModel:
        """A new model with the given array fields replaced (rest, tets, surface, mass, fixed, mu,
        lam, dm_inv, dm_inv_rows, volume, node_ptr, node_inc, node_rep, tets_u, cut_front) and no factored
        system yet; this model is not changed (`sim.tissue_topology` builds them)."""
        fields_ = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "_systems"}
        unknown = set(arrays) - set(fields_)
        if unknown:
            raise ValueError(f"unknown model fields {sorted(unknown)}")
        fields_.update(arrays)
        return TissueModel(**fields_)


@dataclass(frozen=True)
class TissueSystem:
    """The prefactored rest system matrix (1 + h' alpha) M + h' (h' + beta) K over the free nodes,
    h' = 2 dt / 3 (BDF2): the Hessian of the step's incremental potential at rest, times h'^2.

    Attributes:
        dt: the time step [s] it was built for.
        factor: block LDL^T factor (see `sim.sparse_factor`).
        fpos: node -> factor position, shape (n,), int32; -1 for fixed nodes.
        frames: None for the rest matrix; for one assembled at a deformed configuration (`build`'s
            `at`), the node frames there (n', 4) quaternions (w, x, y, z), n' <= n: the step's node
            frames are then relative to them (nodes past n': to rest).
    """

    dt: float
    factor: BlockLDLFactor
    fpos: np.ndarray
    frames: np.ndarray | None = None

    @staticmethod
    def build(model: TissueModel, dt: float, at: tuple | None = None) -> TissueSystem:
        """The step matrix of `model` for dt [s], factored. at = (rotations (4, m), frames (n, 4),
        springs or None): assemble it at a deformed configuration instead of at rest: each element's
        stiffness turned by its rotation there (rest shape R Dm), the persistent springs given
        (`TissueModel.springs` in that configuration's frame), the node frames there kept
        (`frames`): near a clip the tissue is far from rest, its elements turned up to ~75 deg
        against each other, and no single node frame matches all of a node's elements."""
        if not dt > 0:
            raise ValueError(f"time step must be > 0 s, got {dt}")
        mat = model.material
        free = np.flatnonzero(~model.fixed)
        if free.size == 0:
            raise ValueError("every node is fixed: nothing to simulate")
        dof = (3 * free[:, None] + np.arange(3)).reshape(-1)
        springs = model.springs
        if at is None:
            k = model.stiffness()
        else:
            rotations, frames, springs = at
            r = np.stack(quat_to_mat.py_func(*rotations), axis=1).reshape(-1, 3, 3)
            live = np.flatnonzero(model.volume > 0.0)
            dm = model.dm_inv_rows.T.reshape(-1, 3, 3)[live] @ r[live].transpose(0, 2, 1)
            k = fem.stiffness_from_shapes(dm, model.volume[live], model.tets[live], model.node_count,
                                          model.mu[live], model.lam[live])
        hb = 2.0 * dt / 3.0
        a = sp.diags(np.repeat((1.0 + hb * mat.mass_damping) * model.mass, 3)) + hb * (hb + mat.damping) * k
        if springs is not None:  # undamped: the tethers' potential only
            c = sp.coo_matrix(springs)
            a = a + hb * hb * sp.csr_matrix((c.data, (c.row, c.col)), shape=k.shape)
        a = sp.csr_matrix(a)[dof][:, dof]
        try:
            factor = factor_spd_blocked(a)
        except ValueError as exc:
            raise ValueError(
                f"tissue system matrix cannot be factored ({exc}); is some free part of the mesh "
                "disconnected and massless?"
            ) from exc
        fpos = np.full(model.node_count, -1, dtype=np.int32)
        fpos[free[factor.order]] = np.arange(free.size, dtype=np.int32)
        return TissueSystem(dt=dt, factor=factor, fpos=fpos,
                            frames=None if at is None else np.ascontiguousarray(at[1]))


def node_incidence(tets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node -> element incidence of tets (m, 4) over n nodes, for the kernels: node_ptr (n + 1,),
    node_inc (4m,) flat corner indices element*4 + local corner in element order, node_rep (n,)
    each node's first element (0 for a node with none); all uint32."""
    corners = tets.reshape(-1).astype(np.int64)
    order = np.argsort(corners, kind="stable")
    node_ptr = np.zeros(n + 1, dtype=np.uint32)
    np.cumsum(np.bincount(corners, minlength=n), out=node_ptr[1:])
    first = np.minimum(node_ptr[:-1].astype(np.int64), max(order.size - 1, 0))
    return node_ptr, order.astype(np.uint32), (order[first] // 4).astype(np.uint32)


class TissueModelBuilder:
    """Collects a mesh, a material and boundary conditions; `finalize()` makes a `TissueModel`."""

    def __init__(self, mesh: TetMesh, material: TissueMaterial | None = None):
        self.mesh = validate(mesh)
        self.material = material or TissueMaterial()
        self.fixed = np.zeros(self.mesh.node_count, dtype=bool)
        self.gravity = np.array(GRAVITY)

    def fix_nodes(self, mask_or_indices) -> TissueModelBuilder:
        """Hold these nodes at their rest positions (boolean mask (n,) or index array)."""
        idx = np.asarray(mask_or_indices)
        if idx.dtype == bool:
            self.fixed |= idx
        else:
            self.fixed[idx] = True
        return self

    def fix_below(self, z: float, *, tol: float = 1e-9) -> TissueModelBuilder:
        """Fix every node with rest height <= z + tol [m] (e.g. the bottom face on the floor)."""
        return self.fix_nodes(self.mesh.points[:, 2] <= z + tol)

    def finalize(self, *, dt: float | None = 1e-3, polar_iters: int = 2, newton_iters: int = 6,
                 newton_tol: float = 1e-4) -> TissueModel:
        """Build the model; with dt [s] given, also factor its step matrix now (not in the loop).

        polar_iters, newton_iters, newton_tol [m/s]: solver settings, see `TissueModel`.
        """
        if newton_iters < 1 or polar_iters < 1 or not newton_tol >= 0:
            raise ValueError("polar_iters and newton_iters must be >= 1 and newton_tol >= 0")
        pts, tets = self.mesh.points, self.mesh.tets
        dm_inv, vol = fem.rest_shape(pts, tets)
        mu, lam = self.material.lame
        m = tets.shape[0]
        node_ptr, node_inc, node_rep = node_incidence(tets, pts.shape[0])
        model = TissueModel(
            rest=pts.copy(),
            tets=tets.copy(),
            surface=self.mesh.surface_triangles(),
            mass=fem.lumped_masses(pts.shape[0], tets, vol, self.material.density),
            fixed=self.fixed.copy(),
            material=self.material,
            mu=np.full(m, mu),
            lam=np.full(m, lam),
            dm_inv=np.ascontiguousarray(dm_inv),
            dm_inv_rows=np.ascontiguousarray(dm_inv.reshape(m, 9).T),
            volume=vol,
            gravity=self.gravity.astype(np.float64).copy(),
            node_ptr=node_ptr,
            node_inc=node_inc,
            node_rep=node_rep,
            tets_u=tets.astype(np.uint32),
            elasticity=ELASTICITY_CODES[self.material.elasticity],
            polar_iters=int(polar_iters),
            newton_iters=int(newton_iters),
            newton_tol=float(newton_tol),
        )
        if dt is not None:
            model.system(dt)
        return model


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
               "energy", "weight", "carried")
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
    inverted, vmax, bad, iters, evals, refreshed = step_kernel(
        model.tets_u, model.dm_inv_rows, model.volume, model.mu, model.lam, model.elasticity,
        model.mass, model.gravity, model.node_ptr, model.node_inc, model.node_rep, system.fpos,
        fac.l_ptr, fac.l_col, fac.l_val, fac.d_inv, float(dt), mat.damping, mat.mass_damping,
        model.polar_iters, model.newton_iters, model.newton_tol * 2.0 * dt / 3.0,
        math.sin(0.5 * model.turn_tol * dt) ** 2, f_ext,
        s.x, s.v, s.q, s.x_prev, s.v_prev, s.x_last, s.v_last, s.fs, s.gs, s.force, s.energy,
        s.weight, s.carried, s.qt, s.f, s.gn, s.xp, s.y, s.dx, s.pz, s.r_prev, s.fb, s.df,
        s.f_cur, s.e_trial, s.r_node, s.res, s.rhs, s.node_e, s.fresh,
        NO_FRAMES if system.frames is None else system.frames,
        *(NO_TETHERS if tethers is None else tethers),
    )
    # The step's end rotations, F and next-step damping gradients are in qt, f, gn: swap.
    s.q, s.qt = s.qt, s.q
    s.fs, s.f = s.f, s.fs
    s.gs, s.gn = s.gn, s.gs
    state.carried = True
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


def linear_static(model: TissueModel, load: np.ndarray | None = None) -> np.ndarray:
    """Converged linear static FEM displacement [m], (n, 3), under gravity plus node loads [N]
    (n, 3): K u = M g + f on the free nodes (SciPy sparse solve). The reference the demo and the
    benchmark compare the solver's settled state with; not for the loop.
    """
    import scipy.sparse.linalg as spla

    free = np.repeat(~model.fixed, 3)
    f = model.mass[:, None] * model.gravity
    if load is not None:
        f = f + load
    u = np.zeros(3 * model.node_count)
    u[free] = spla.spsolve(sp.csc_matrix(model.stiffness()[free][:, free]), f.reshape(-1)[free])
    return u.reshape(-1, 3)


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
