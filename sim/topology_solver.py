"""The tissue solver after a topology change (`sim.tissue_topology`): the stale factor extended
to the new nodes, and the exact factor rebuilt off the hot path.

The model after a change starts with the old factor, its new nodes given their own diagonal
blocks; it is only the preconditioner of the solver's line-searched iterations
(docs/tissue-solver.md), so steps stay energy-decreasing. A worker thread factors the new matrix;
the caller swaps it in at a fixed tick (`REFACTOR_TICKS` after the change), waiting if needed, so
replays are bit-identical. See docs/cutting.md.
"""

from __future__ import annotations

import threading

import numpy as np

from sim import fem
from sim.sparse_factor import BlockLDLFactor
from sim.tissue_model import TissueModel, TissueSystem

#: Ticks between a topology change and the swap of the rebuilt factor (~0.2 s of factoring at 5k
#: tets on one core; the swap waits for the worker if it is late, so this only decides speed).
REFACTOR_TICKS = 400
#: The same for the organs of an anatomy scene (~500 nodes: 15-25 ms to factor): the old factor
#: misjudges the cut region, and dividing a duct cost ~5 element passes a tick for the 400 ticks.
ORGAN_REFACTOR_TICKS = 40
#: An organ body's step matrix follows its configuration: every DRIFT_CHECK_TICKS the scene compares
#: the node frames with those the factor was assembled at and, when DRIFT_NODES of them have turned
#: more than DRIFT_DEG, refactors at the configuration (retracting the gallbladder turns it far from
#: where it hung, and the matrix assembled there misjudges it as the rest matrix misjudged the
#: hanging ducts: docs/tissue-solver.md). One node is enough: waiting for 8 let a torn-out
#: gallbladder recoil at 1.9 m/s instead of 1.0 (the matrix lagged the stretched organ).
DRIFT_CHECK_TICKS = 20
DRIFT_DEG = 10.0
DRIFT_NODES = 1


def node_diagonal_blocks(model: TissueModel, nodes: np.ndarray, dt: float) -> np.ndarray:
    """The step matrix's diagonal 3x3 blocks (1 + h' alpha) m_i I + h' (h' + beta) K_ii of
    `nodes` (j,), shape (j, 3, 3) (h' = 2 dt / 3)."""
    mat = model.material
    hb = 2.0 * dt / 3.0
    out = np.zeros((nodes.size, 3, 3))
    out += ((1.0 + hb * mat.mass_damping) * model.mass[nodes])[:, None, None] * np.eye(3)
    ptr = model.node_ptr.astype(np.int64)
    lo, hi = ptr[nodes], ptr[nodes + 1]
    start = np.concatenate([[0], np.cumsum(hi - lo)[:-1]])
    codes = model.node_inc[np.repeat(lo - start, hi - lo) + np.arange(int((hi - lo).sum()))]
    codes = codes.astype(np.int64)
    owner = np.repeat(np.arange(nodes.size), hi - lo)
    e, a = codes >> 2, codes & 3
    g = fem.shape_gradients(model.dm_inv[e])[np.arange(e.size), a]  # (k, 3) [1/m]
    w = model.volume[e]
    gg = g[:, :, None] * g[:, None, :]
    kk = (w * model.mu[e])[:, None, None] * (np.einsum("ki,ki->k", g, g)[:, None, None] * np.eye(3) + gg)
    kk += (w * model.lam[e])[:, None, None] * gg
    np.add.at(out, owner, hb * (hb + mat.damping) * kk)
    return out


def extend_system(old: TissueSystem, model: TissueModel, node_source: np.ndarray, dt: float) -> TissueSystem:
    """The old factor as the new model's preconditioner: old free nodes keep their factor rows,
    new free nodes get new rows with no coupling and their own diagonal block; rows of nodes that
    became fixed are cut off from the others (their L entries zeroed), so their stale values never
    reach a free node."""
    fac = old.factor
    k_old = fac.d_inv.shape[0]
    n_old = old.fpos.shape[0]
    fpos = np.full(model.node_count, -1, dtype=np.int32)
    fpos[:n_old] = old.fpos
    gone = np.flatnonzero(model.fixed[:n_old] & (old.fpos >= 0))
    l_val = fac.l_val
    if gone.size:
        slots = old.fpos[gone]
        fpos[gone] = -1
        rows = np.repeat(np.arange(k_old), np.diff(fac.l_ptr.astype(np.int64)))
        cut = np.isin(fac.l_col, slots) | np.isin(rows, slots)
        if cut.any():
            l_val = l_val.copy()
            l_val[cut] = 0.0
    new = np.flatnonzero(~model.fixed[n_old:]) + n_old
    fpos[new] = k_old + np.arange(new.size, dtype=np.int32)
    d_new = np.linalg.inv(node_diagonal_blocks(model, new, dt)) if new.size else np.zeros((0, 3, 3))
    factor = BlockLDLFactor(
        order=np.concatenate([fac.order, new.astype(np.int32)]),
        l_ptr=np.concatenate([fac.l_ptr, np.full(new.size, fac.l_ptr[-1], dtype=np.uint32)]),
        l_col=fac.l_col, l_val=l_val,
        d_inv=np.ascontiguousarray(np.concatenate([fac.d_inv, d_new])),
    )
    return TissueSystem(dt=old.dt, factor=factor, fpos=fpos, frames=old.frames)


class FactorRebuild:
    """Factors a model's exact step matrix (at rest, or at a configuration `at`:
    `TissueSystem.build`) in a worker thread; `result()` waits for it. A saved scene state keeps
    the job (`sim.scene_topology.Refactor.get_state`), so restoring it finds the factor built.

    The thread does not run free of the tick: SciPy's sparse conversions and SuperLU hold the GIL
    while they run (measured on the cholecystectomy's tissue step, p99 200-250 us alone: 4.4 ms
    with a thread factoring alongside, 0.7 ms once the ordering of an unchanged pattern was
    cached; docs/anatomy.md). A worker process was tried and not kept (docs/anatomy.md)."""

    def __init__(self, model: TissueModel, dt: float, at: tuple | None = None) -> None:
        self.model, self.dt, self.at = model, dt, at
        self._result: TissueSystem | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tissue-refactor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = TissueSystem.build(self.model, self.dt, self.at)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def ready(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> TissueSystem:
        """The factored system; blocks until the worker is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result
