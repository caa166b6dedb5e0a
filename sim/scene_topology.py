"""The scene's side of tissue topology changes: which tools cut, when their jaws cut, the factor
swap after a change, the crumbs a change drops (`drop_crumbs`), and the snapshot arrays of a
surface that changes.

`sim.scene.Scene` owns one `ScissorsWatch` and one `Refactor` and swaps the model/state of a
`sim.tissue_rebuild.TopologyChange` in (`Scene.apply_topology`). Everything here is part of the
scene's dynamic state (saved, restored and hashed by the scene) and deterministic: a cut happens in
the tick whose jaw command closes, the rebuilt factor is swapped in `REFACTOR_TICKS` ticks later.
See docs/cutting.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim import instruments as inst
from sim import tissue_topology
from sim.cutting import Blade, scissors_blade
from sim.tissue import TissueState
from sim.tissue_model import TissueModel
from sim.tissue_rebuild import TopologyChange
from sim.tool_scene import GRASP_CLOSE, GRASP_OPEN
from sim.topology_solver import REFACTOR_TICKS, FactorRebuild

#: Snapshot capacities relative to the start mesh: nodes, surface triangles.
NODE_CAPACITY = 2
TRIANGLE_CAPACITY = 3
#: The one version of the snapshot layout (scene.snapshot() plus what `sim.runtime.step` adds; the
#: session step publishes it as `version`, describe() as `snapshot_version`). Bump it when a key or
#: a shape changes: displays run in other processes. 1: scene.snapshot + hud + pub_ns; 2: + jaws,
#: force_env, version; 3: tissue_x at a fixed node capacity, tissue_tris + tissue_topo (the live
#: surface after cuts and tears), clips, blood.
SNAPSHOT_VERSION = 3
#: A piece of tissue cut or torn off with fewer live elements than this, and no clamped node, is
#: dropped (`drop_crumbs`).
CRUMB_ELEMENTS = 4


def cutter_tools(tools: list[inst.Instrument]) -> tuple[int, ...]:
    """Indices of the tools whose jaws cut (scissors) instead of grasping tissue."""
    return tuple(i for i, t in enumerate(tools) if t.spec.name == inst.SCISSORS.name)


class ScissorsWatch:
    """Per cutting tool: the widest commanded opening since its jaws last closed [rad], and the
    last jaw command [rad]; `closing` says which tools cut in this tick and along what."""

    def __init__(self, tools: list[inst.Instrument], cutters: tuple[int, ...]) -> None:
        self.tools, self.cutters = tools, cutters
        self.open = np.zeros(len(tools))
        self.last = np.full(len(tools), np.inf)

    def closing(self, jaws: np.ndarray, link_pose: np.ndarray) -> tuple[tuple[int, Blade], ...]:
        """Update from this tick's jaw commands (n_tools,) [rad]; for every cutter whose command
        crosses below GRASP_CLOSE after opening past GRASP_OPEN, (tool, the blade surface its jaws
        sweep closing from the widest opening), the shaft pose taken from link_pose (n_tools, 3, 7)."""
        out = ()  # no allocation on the ticks that do not cut
        for i in self.cutters:
            spec = self.tools[i].spec
            cmd = float(jaws[i])
            self.open[i] = max(self.open[i], min(cmd, spec.jaw_open_max))
            if cmd < GRASP_CLOSE <= self.last[i]:
                if self.open[i] > GRASP_OPEN:
                    out += ((i, scissors_blade(link_pose[i, 0], spec, self.open[i])),)
                self.open[i] = max(cmd, 0.0)
            self.last[i] = cmd
        return out

    def get_state(self) -> dict:
        return {"open": self.open.copy(), "last": self.last.copy()}

    def set_state(self, state: dict) -> None:
        self.open[:] = state["open"]
        self.last[:] = state["last"]

    def hash_into(self, h) -> None:
        h.update(self.open.tobytes())
        h.update(self.last.tobytes())


class Refactor:
    """The pending factor rebuild after a topology change and the tick it is swapped in at."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self.job: FactorRebuild | None = None
        self.pending: tuple | None = None  # (model, at)
        self.swap_tick = -1

    def start(self, model: TissueModel, tick: int, delay: int = REFACTOR_TICKS,
              at: tuple | None = None) -> None:
        """Factor `model` (at rest, or at the configuration `at`: `TissueSystem.build`) in a worker
        thread (started by `launch`, after this tick's step, so it does not compete with the tick
        that cut); swap it in at tick + delay."""
        self.job = None
        self.pending = (model, at)
        self.swap_tick = tick + delay

    def idle(self) -> bool:
        """No rebuild pending or running toward a swap."""
        return self.pending is None and self.swap_tick < 0

    def launch(self) -> None:
        """Start the pending rebuild, if any (end of a tick)."""
        if self.pending is not None:
            self.job = FactorRebuild(self.pending[0], self.dt, self.pending[1])
            self.pending = None

    def due(self, model: TissueModel, tick: int) -> None:
        """At the swap tick, make the rebuilt factor `model`'s (waits for the worker if late)."""
        if tick == self.swap_tick:
            self.launch()
            model.use_system(self.job.result())
            self.swap_tick = -1

    def get_state(self, model: TissueModel | None) -> dict:
        self.launch()  # a saved state refers to a running (or finished) rebuild
        return {"job": self.job, "swap_tick": self.swap_tick,
                "system": model.system(self.dt) if model is not None else None}

    def set_state(self, state: dict, model: TissueModel | None) -> None:
        self.job, self.swap_tick = state["job"], state["swap_tick"]
        self.pending = None
        if model is not None and state["system"] is not None:
            model.use_system(state["system"])

    def hash_into(self, h) -> None:
        h.update(np.int64(self.swap_tick).tobytes())


def capacities(model: TissueModel | None) -> tuple[int, int]:
    """(node, surface triangle) capacities of the snapshot for a scene starting with `model`."""
    if model is None:
        return 0, 0
    return NODE_CAPACITY * model.node_count, TRIANGLE_CAPACITY * model.surface.shape[0]


def fits(model: TissueModel, caps: tuple[int, int]) -> bool:
    """Whether a (changed) model fits the snapshot capacities."""
    return model.node_count <= caps[0] and model.surface.shape[0] <= caps[1]


def tissue_snapshot(model: TissueModel | None, state: TissueState | None, version: int,
                    caps: tuple[int, int]) -> dict[str, np.ndarray]:
    """Fixed-shape tissue arrays of a snapshot (snapshot version 3): tissue_x (max_nodes, 3) [m]
    (live rows first, the rest 0), tissue_tris (max_triangles, 3) float64 node ids of the live
    outward surface (rest 0), tissue_topo (3,) = (topology version, node count, triangle count)."""
    x = np.zeros((caps[0], 3))
    tris = np.zeros((caps[1], 3))
    topo = np.zeros(3)
    if model is not None:
        n, k = model.node_count, model.surface.shape[0]
        x[:n] = state.x
        tris[:k] = model.surface
        topo[:] = (version, n, k)
    return {"tissue_x": x, "tissue_tris": tris, "tissue_topo": topo}


def drop_crumbs(change: TopologyChange, dt: float) -> TopologyChange:
    """A change that cut off pieces of fewer than CRUMB_ELEMENTS live elements with no clamped
    node (a tet or two between two snips) drops them too (they die: a crumb falls off; its
    mass is lost, ~0.04 % per element of the gauze). A lone free tet with a stale factor and
    no neighbours blew the one-pass step up (the pattern cut's 'tissue_reset' at 9.67 s)."""
    model = change.model
    label = tissue_topology.components(model)
    live = np.flatnonzero(model.volume > 0.0)
    el_label = label[model.tets[live, 0]]
    count = np.bincount(el_label, minlength=label.max() + 1)
    held = np.bincount(label, weights=model.fixed.astype(float), minlength=label.max() + 1) > 0
    crumb = (count > 0) & (count < CRUMB_ELEMENTS) & ~held
    if not crumb.any():
        return change
    gone = tissue_topology.remove_elements(model, change.state, live[crumb[el_label]], dt=dt)
    if gone is None:
        return change
    return dataclasses.replace(gone, node_source=change.node_source[gone.node_source],
                               moved=change.moved, killed=np.union1d(change.killed, gone.killed),
                               faces=change.faces, length=change.length, area=change.area)
