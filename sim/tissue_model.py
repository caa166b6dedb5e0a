"""Soft tissue, the part the loop never changes: `TissueMaterial`, `TissueModel` and its builder,
and `TissueSystem`, the model's prefactored step matrix.

Built like Newton/MuJoCo: `TissueModelBuilder(mesh, material).finalize()` makes the model once (and
factors its step matrix for the time step given); the state that changes every tick, `make_state()`
and `step()` are `sim.tissue`. Also the model's linear static reference (`linear_static`).

Units: m, s, kg, N, Pa.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from sim import fem
from sim.mesh import TetMesh, validate
from sim.sparse_factor import BlockLDLFactor, factor_spd_blocked
from sim.tissue_elements import ELASTICITY_CODES
from sim.tissue_kernels import quat_to_mat

GRAVITY = (0.0, 0.0, -9.81)
NO_FRAMES = np.zeros((0, 4))  # a rest-assembled step matrix's node frames (`TissueSystem.frames`)


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
