"""The Scene: PyBullet world + instruments + Numba tissue, advanced by one `tick(control, dt)`.

`tick` runs steps 3-6 of the tick in ../shared/ARCHITECTURE.md:

3. PyBullet (`sim.tool_scene.ToolScene`): each tool proxy follows its commanded target through the
   virtual coupling and the port fulcrum; rigid objects collide with the tools; last tick's tissue
   reaction is applied to the tool bodies as an external force, so the coupling stretches against it.
4. Tool-tissue contact (`sim.contact`): tool capsules from PyBullet's link poses against the tissue
   surface; grasp attachments; constraint forces carried into the tissue step.
5. Tissue step (`sim.tissue.step`, Numba, nogil).
6. Contact projection after the step; the reaction per tool is stored for the next tick's step 3.

The returned force per tool is the coupling force on the proxy [N]; the device renders its negative.
The tissue reaction reaches the hand one tick (1 ms) later, through the coupling, which keeps the
loop passive (the hand never feels the tissue directly).

Scenes (`build_scene(name)`): the built-in configurations are `sim.scene_build`'s.

Lockstep determinism: no wall-clock input anywhere in `tick`; the same controls give bit-identical
states (`checksum`).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass

import numpy as np

from sim import clips as clp
from sim import instruments as inst
from sim import scene_topology as topo
from sim import tissue_topology
from sim.anatomy import Anatomy
from sim.bleeding import MAX_DROPS
from sim.contact import ToolTissueContact
from sim.cutting import Blade
from sim.scene_build import SceneConfig, make_body, scene_config, start_scope
from sim.scene_describe import describe
from sim.scene_state import SceneState, hash_tissue_state, restore_attrs, tissue_state_dict
from sim.tissue import TissueContacts, TissueDivergedError, TissueState, make_state, step
from sim.tissue_injury import TissueInjury
from sim.tissue_model import TissueModel
from sim.tissue_rebuild import TopologyChange
from sim.tool_scene import ToolScene
from sim.topology_solver import DRIFT_CHECK_TICKS, DRIFT_DEG, DRIFT_NODES, ORGAN_REFACTOR_TICKS


@dataclass(eq=False)
class SceneControl:
    """Commands for one tick.

    Attributes:
        targets: per tool commanded tip (x, y, z [m], roll [rad]), shape (n_tools, 4).
        jaws: per tool commanded total jaw opening [rad], shape (n_tools,).
    """

    targets: np.ndarray
    jaws: np.ndarray


@dataclass(frozen=True)
class SceneEvent:
    """Something a procedure or a recording cares about.

    kind: 'grasp' | 'release' | 'slip' | 'grasp_object' | 'release_object' | 'tissue_reset' |
    'cut' (value: the new cut's length [m], docs/cutting.md) | 'cut_started' (a snip moved nodes
    onto its blade but split none: the crack the next snip continues) | 'cut_refused' (the changed
    mesh would not fit the snapshot capacity) | 'tear' (value: the pulling force [N]) | 'tear_grows'
    (value: the crack's new length [m]) | a topology change kind of `Scene.apply_topology`;
    tick: tick index; tool: tool index (-1 if none); value: a number for the kind (e.g. the pulling
    force at a slip [N]); message: one line for people; body: the rigid object concerned, as an
    index into `rigid.graspable` (= the row of the snapshot's `bodies`), -1 if none.
    """

    tick: int
    kind: str
    tool: int
    value: float
    message: str
    body: int = -1


class Scene:
    """A world with tools, rigid objects and (optionally) one tissue body, ticked in lockstep.

    Attributes (read-only to callers):
        config: what was built. tools: the `sim.instruments.Instrument`s (tool i = control row i).
        tissue: TissueModel or None; tissue_state: TissueState or None.
        anatomy: the `sim.anatomy.Anatomy` of an organ scene, else None.
        tissue_body: per element organ label (m,) int8 (`sim.anatomy.BODIES`; all 0 for the pad).
        events: SceneEvents appended by `tick` (callers may clear the list).
        rng: numpy Generator seeded with the session's seed (all randomness of the session).
        tick_count: ticks done. part_ns: last tick's time per part (pybullet, contact, tissue) [ns].
        scope: the laparoscope (`sim.camera.LaparoscopeCamera`: pose (7,), angle, fov_y, aspect,
        in_view(points)); the renderer draws through it (snapshot `scope`).
    """

    def __init__(self, config: SceneConfig | None = None, *, seed: int = 0) -> None:
        cfg = config or SceneConfig()
        self.config = cfg
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)  # the session's randomness; never np.random
        self.dt = cfg.dt
        self.rigid = ToolScene(cfg.tools, stiffness=cfg.stiffness, pegboard=cfg.pegboard, dt=cfg.dt)
        self.tools = self.rigid.tools
        self.n_tools = len(self.tools)
        self.tissue: TissueModel | None = None
        self.body_info = None
        if cfg.tissue_tets > 0:
            self.tissue, self.body_info = make_body(cfg)
        # An organ scene (cfg.body a sim.organs.AnatomyBody): its anatomy and organ labels.
        self.anatomy: Anatomy | None = getattr(cfg.body, "anatomy", None)
        self.tissue_body = (self.anatomy.body.copy() if self.anatomy is not None else
                            np.zeros(self.tissue.tet_count if self.tissue else 0, dtype=np.int8))
        self.tissue_state: TissueState | None = self._start_state() if self.tissue else None
        self.cutters = topo.cutter_tools(self.tools)
        self.contact = (ToolTissueContact(self.tissue, self.tools, cfg.dt, cutters=self.cutters)
                        if self.tissue else None)
        self._contacts = TissueContacts.zeros(self.tissue) if self.tissue else None
        self.injury = (TissueInjury(self.tissue, self.body_info, self.tools, cfg.dt, self.contact)
                       if self.tissue else None)
        self.events: list[SceneEvent] = []
        self.tick_count = 0
        self.part_ns = np.zeros(3, dtype=np.int64)
        self.reaction = np.zeros((self.n_tools, 3))  # tissue force on each tool [N]
        self._grasped_obj: list[int | None] = [None] * self.n_tools
        self._link_pose = np.zeros((self.n_tools, 3, 7))  # link poses of tick _link_tick
        self._link_tick = -1
        self.scope = start_scope(cfg, self.anatomy, self.tissue, self.rigid.pegboard)
        self.topology_version = 0  # +1 per applied topology change (cut, tear, removal)
        self.topology_listeners: list = []  # f(change) after each applied change
        if self.injury is not None:
            self.topology_listeners.append(self.injury.on_topology)
        self._scissors = topo.ScissorsWatch(self.tools, self.cutters)
        self._refactor = topo.Refactor(cfg.dt)
        self._caps = topo.capacities(self.tissue)
        # Organs: the step matrix follows the tissue's configuration (`_follow_configuration`).
        self._follow = getattr(self.body_info, "start_x", None) is not None
        self._frames = np.zeros((self._caps[0], 4))
        self._start = self.get_state()  # what reset() returns to
        if self.cutters or (self.injury is not None and self.injury.damage is not None):
            tissue_topology.warmup()  # not inside the first snip's or tear's tick

    # -- the tick ------------------------------------------------------------------------------------

    def tick(self, control: SceneControl, dt: float) -> np.ndarray:
        """Advance one step of dt [s] (must equal config.dt).

        Returns the coupling force on each tool proxy [N], shape (n_tools, 3); the device renders -F.
        A tissue blow-up (sim.tissue.TissueDivergedError) does not propagate: the tissue is reset to
        rest, grasps are released and a 'tissue_reset' event is recorded.
        """
        t0 = time.perf_counter_ns()
        if self.contact is not None:
            self.contact.apply_reaction()
        force = self.rigid.tick(control.targets, control.jaws, dt)
        self._object_grasp_events()
        t1 = time.perf_counter_ns()
        if self.contact is not None:
            self.contact.before_step(self.tissue_state, control.jaws)
            self._refactor.due(self.tissue, self.tick_count)
            if self._follow and self.tick_count % DRIFT_CHECK_TICKS == 0 and self._refactor.idle():
                self._follow_configuration()
            for tool, blade in self._scissors.closing(control.jaws, self.contact.link_pose):
                self.cut(blade, tool=tool)
            self.injury.before_step(self.tissue_state, control.jaws)
            clipped = self.injury.take_refactor()
            if clipped is not None:
                self._refactor.start(clipped[0], self.tick_count, clp.CLIP_REFACTOR_TICKS, clipped[1])
            t2 = time.perf_counter_ns()
            try:
                step(self.tissue, self.tissue_state, None, self._contacts, dt, self.injury.tethers())
                t3 = time.perf_counter_ns()
                self.contact.after_step(self.tissue_state, self._contacts.force, self.reaction)
                self.injury.after_step(self.tissue_state, self._contacts.force, self.reaction)
                tear = self.injury.take_tear()
                if tear is not None:
                    self._tear(*tear)
            except TissueDivergedError as exc:
                t3 = time.perf_counter_ns()
                self._reset_tissue(str(exc))
            for kind, tool, value, message in self.contact.drain_events() + self.injury.drain_events():
                self.events.append(SceneEvent(self.tick_count, kind, tool, value, message))
            t4 = time.perf_counter_ns()
            self.part_ns[:] = (t1 - t0, (t2 - t1) + (t4 - t3), t3 - t2)
            self._refactor.launch()
        else:
            self.part_ns[:] = (t1 - t0, 0, 0)
        self.tick_count += 1
        return force

    # -- topology ------------------------------------------------------------------------------------

    def cut(self, blade: Blade, *, tool: int = -1) -> TopologyChange | None:
        """Cut the tissue along `blade` now (what the scissors do when their jaws close); appends a
        'cut' event (value: the cut's length [m]) and returns the change, or None if nothing
        separated."""
        if self.tissue is None:
            return None
        change = tissue_topology.cut(self.tissue, self.tissue_state, blade, dt=self.dt)
        if change is None:
            return None
        change = topo.drop_crumbs(change, self.dt)
        who = f"tool {tool}" if tool >= 0 else "a scripted blade"
        if change.model.node_count == self.tissue.node_count and change.killed.size == 0:
            # Nothing came apart (a snip shorter than about one element), but nodes were moved
            # onto the blade: they start the crack (the model's cut_front), so that the next snip
            # continues it instead of starting over (a thin gauze cut in element-long snips).
            if change.moved.size == 0:
                return None
            ok = self.apply_topology(change, "cut_started", tool, 0.0,
                                     f"{who} notched the tissue (the next snip continues the cut)")
            return change if ok else None
        ok = self.apply_topology(change, "cut", tool, change.length,
                                 f"{who} cut {change.length * 1e3:.1f} mm of tissue")
        return change if ok else None

    def _tear(self, blade: Blade | None, failed: np.ndarray, event) -> None:
        """Separate the tissue along a tear's crack (`sim.damage.DamageField.crack_blade`) with
        the cutting core; the topology change carries the 'tear' event (or 'tear_grows' for
        failures continuing the same tear). If nothing separates, the failed elements soften."""
        change = (tissue_topology.cut(self.tissue, self.tissue_state, blade, dt=self.dt)
                  if blade is not None else None)
        if change is not None:
            change = topo.drop_crumbs(change, self.dt)
        if change is not None and (change.model.node_count > self.tissue.node_count
                                   or change.killed.size):
            kind, tool, value, message = event if event is not None else (
                "tear_grows", -1, change.length, f"the tear grew by {change.length * 1e3:.1f} mm")
            if self.apply_topology(change, kind, tool, value, message):
                return
        self.injury.tear_not_separated(failed, event, self.tissue_state)

    def apply_topology(self, change: TopologyChange, kind: str, tool: int, value: float,
                       message: str) -> bool:
        """Swap in a topology change (`sim.tissue_topology`: cut, separate_faces, remove_elements)
        at this tick boundary: the model and state, the contact layer (surface, node arrays), the
        factor rebuild; appends SceneEvent(kind, tool, value, message) and calls the listeners.
        False (and a 'cut_refused' event) if the mesh would exceed the snapshot capacity."""
        if not topo.fits(change.model, self._caps):
            self.events.append(SceneEvent(self.tick_count, "cut_refused", tool, value,
                                          f"{message}: refused, the tissue mesh would exceed its "
                                          f"capacity ({self._caps[0]} nodes, {self._caps[1]} faces)"))
            return False
        n_old = self.tissue.node_count
        self._install(change.model, change.state)
        self._contacts.force[:n_old] = self._carried[:n_old]
        self.contact.retopologize(change.model, change.node_source)
        self.topology_version += 1
        self.events.append(SceneEvent(self.tick_count, kind, tool, float(value), message))
        for listener in self.topology_listeners:
            listener(change)
        # A body whose step matrix follows its configuration (organs: `sim.organs.hanging`) gets
        # the rebuilt one assembled where the tissue is now (the clips rebound by the listeners).
        if self._follow:
            self._refactor.start(change.model, self.tick_count, ORGAN_REFACTOR_TICKS,
                                 self.injury.configuration(change.state))
        else:
            self._refactor.start(change.model, self.tick_count)
        return True

    def _install(self, model: TissueModel, state: TissueState) -> None:
        """Make model/state the scene's tissue; contact forces carried into the next step are
        kept in `_carried` (by node id) for the caller."""
        self._carried = self._contacts.force
        self.tissue = model
        self.tissue_state = state
        self._contacts = TissueContacts.zeros(model)

    def _follow_configuration(self) -> None:
        """Refactor the step matrix where the tissue is (off the hot path, swapped in
        ORGAN_REFACTOR_TICKS later) once DRIFT_NODES node frames have turned DRIFT_DEG from those
        it was assembled at."""
        st = self.tissue_state
        limit = np.sin(np.radians(DRIFT_DEG) / 2.0) ** 2
        if self.injury.drift(st, self.tissue.system(self.dt), limit, self._frames) >= DRIFT_NODES:
            self._refactor.start(self.tissue.with_topology(), self.tick_count, ORGAN_REFACTOR_TICKS,
                                 self.injury.configuration(st))

    def _start_state(self) -> TissueState:
        """The tissue at its start: where its body says it hangs (`BodyInfo.start_x`), else at rest
        (and at rest once a cut has changed the node count)."""
        x = getattr(self.body_info, "start_x", None)
        if x is not None and len(x) != self.tissue.node_count:
            x = None
        return make_state(self.tissue, x)

    def _reset_tissue(self, why: str) -> None:
        """Recover from a tissue blow-up: back to rest, grasps released, no contact forces left.

        The hand then feels no tissue for a tick instead of a kick; the event says what happened.
        """
        rest = self._start_state()
        for name in ("x", "v", "q"):
            getattr(self.tissue_state, name)[...] = getattr(rest, name)
        self.tissue_state.carried = False
        self.tissue_state.step_hint = 1.0
        self._contacts.force[:] = 0.0
        self.reaction[:] = 0.0
        self.contact.reset()
        self.injury.after_reset()
        self.events.append(SceneEvent(self.tick_count, "tissue_reset", -1, 0.0,
                                      f"{why}; tissue reset to rest"))

    def _object_grasp_events(self) -> None:
        graspable = self.rigid.graspable
        for i, held in enumerate(self.rigid.grasped):
            before = self._grasped_obj[i]
            if held != before:
                if before is not None:
                    k = graspable.index(before)
                    self.events.append(SceneEvent(self.tick_count, "release_object", i, 0.0,
                                                  f"tool {i} released object {k}", k))
                if held is not None:
                    k = graspable.index(held)
                    self.events.append(SceneEvent(self.tick_count, "grasp_object", i, 0.0,
                                                  f"tool {i} grasped object {k}", k))
                self._grasped_obj[i] = held

    def hold_control(self) -> SceneControl:
        """A control that holds every tool where it is, jaws closed."""
        return SceneControl(np.array([np.r_[t.tip(), t.read_state().q[3]] for t in self.tools]),
                            np.zeros(self.n_tools))

    # -- reading -------------------------------------------------------------------------------------

    def _links(self) -> np.ndarray:
        """This tick's link poses (n_tools, 3, 7), read from PyBullet at most once per tick."""
        if self.contact is not None:  # the contact stage read them after this tick's step already
            return self.contact.link_pose
        if self._link_tick != self.tick_count:
            inst.read_link_poses(self.tools, self._link_pose)
            self._link_tick = self.tick_count
        return self._link_pose

    def tool_link_poses(self) -> np.ndarray:
        """World poses of each tool's shaft, jaw A and jaw B links: (n_tools, 3, 7), rows are
        position [m] and quaternion (x, y, z, w). The shaft link's origin is the tool tip (jaws
        closed) and its +z axis points up the shaft."""
        return self._links().copy()

    def read_tool_poses(self, out: np.ndarray) -> np.ndarray:
        """Each tool's shaft link pose (tip, jaws closed) into out (n_tools, 7) [m, quaternion
        x y z w]; no allocation. Returns out."""
        out[:] = self._links()[:, 0]
        return out

    def body_poses(self) -> np.ndarray:
        """Poses of the movable rigid bodies (rings, clips) in `rigid.graspable` order, (k, 7)."""
        return np.array([self.rigid.body_pose(b) for b in self.rigid.graspable]).reshape(-1, 7)

    def snapshot(self) -> dict[str, np.ndarray]:
        """What a renderer or recorder needs of this tick, as fixed-shape float64 arrays:
        tissue_x (max_nodes, 3) [m], tissue_tris (max_triangles, 3), tissue_topo (3,) (snapshot
        version 3, fixed capacities for a surface that changes: `sim.scene_topology.tissue_snapshot`;
        0 rows without tissue), tool_links (n_tools, 3, 7),
        tool_force (n_tools, 3) [N] (coupling force on the proxy), bodies (k, 7),
        tick (1,) (tick index as float64), scope_pose (7,) (`scope.pose`), scope (6,) (the scope's
        `params()`: the renderer draws through this camera); clips (MAX_CLIPS, 8): position [m],
        quaternion (x, y, z, w), 1 if the clip is on (`sim.clips`); blood (1 + MAX_DROPS, 4):
        pool then drops, (x, y, z, radius [m]), radius 0 = none (`sim.bleeding`)."""
        clips, blood = (self.injury.snapshot_rows() if self.injury is not None else
                        (np.zeros((clp.MAX_CLIPS, 8)), np.zeros((1 + MAX_DROPS, 4))))
        return {
            **topo.tissue_snapshot(self.tissue, self.tissue_state, self.topology_version, self._caps),
            "tool_links": self.tool_link_poses(),
            "tool_force": self.rigid.last_force.copy(),
            "bodies": self.body_poses(),
            "tick": np.array([float(self.tick_count)]),
            "scope_pose": self.scope.pose,
            "scope": self.scope.params(),
            "clips": clips,
            "blood": blood,
        }

    def describe(self) -> dict:
        """Static description for renderers (`sim.scene_describe.describe`: picklable plain data,
        fixed for the scene's life)."""
        return describe(self, self._caps)

    # -- state ---------------------------------------------------------------------------------------

    def get_state(self) -> SceneState:
        """The whole dynamic state (sim.scene_state), for `set_state`. Call `release()` on it when
        done (it holds a PyBullet saved state). The scene goes on from the state as restored (Bullet's
        contact cache emptied, see ToolScene.set_state), so what follows a get_state is exactly what
        follows every later set_state of it."""
        own = {"tick_count": self.tick_count, "reaction": self.reaction.copy(),
               "grasped_obj": list(self._grasped_obj), "n_events": len(self.events),
               "scope": self.scope.params(), "rng": copy.deepcopy(self.rng.bit_generator.state),
               "seed": self.seed, "topology_version": self.topology_version,
               "tissue_model": self.tissue, "scissors": self._scissors.get_state(),
               "refactor": self._refactor.get_state(self.tissue)}
        if self._contacts is not None:
            own["contacts_force"] = self._contacts.force.copy()
        if self.injury is not None:
            own["injury"] = self.injury.get_state()
        tissue = tissue_state_dict(self.tissue_state) if self.tissue_state is not None else None
        return SceneState(rigid=self.rigid.get_state(),
                          contact=self.contact.get_state() if self.contact is not None else None,
                          tissue=tissue, scene=own)

    def set_state(self, state: SceneState) -> None:
        """Put the scene back into `state` in place: same PyBullet world, same arrays; then the same
        controls give bit-identical ticks (checksum). Events after the state's are dropped."""
        if state.released:
            raise ValueError("this SceneState was released")
        self.rigid.set_state(state.rigid)
        own = state.scene
        model = own["tissue_model"]
        if model is not self.tissue:
            self._install(model, TissueState(**{k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                for k, v in state.tissue.items()}))
            self.contact.retopologize(model)
            self.injury.retopologize(model)
        self._refactor.set_state(own["refactor"], model)
        self._scissors.set_state(own["scissors"])
        self.topology_version = own["topology_version"]
        if state.contact is not None:
            self.contact.set_state(state.contact)
        if state.tissue is not None:
            restore_attrs(self.tissue_state, state.tissue)
        self.tick_count = own["tick_count"]
        self.reaction[:] = own["reaction"]
        self._grasped_obj = list(own["grasped_obj"])
        del self.events[own["n_events"]:]
        self.scope.set_params(own["scope"])
        self.seed = own["seed"]
        self.rng.bit_generator.state = copy.deepcopy(own["rng"])
        if "contacts_force" in own:
            self._contacts.force[:] = own["contacts_force"]
        if "injury" in own:
            self.injury.set_state(own["injury"])
        self._link_tick = -1

    def reset(self, seed: int | None = None) -> None:
        """Back to the state the scene was built in (tick 0, no events), in place; seed (if given)
        reseeds `rng`. Cost: `trocar bench reset`."""
        self.set_state(self._start)
        if seed is not None:
            self.seed = int(seed)
            self.rng.bit_generator.state = np.random.default_rng(self.seed).bit_generator.state

    def checksum(self) -> str:
        """SHA-256 (hex) of the whole dynamic state: tick count; tool joints and rigid bodies (pose,
        velocity), coupling targets, grasp constraints and collision filters; tissue positions,
        velocities, element rotations and counters; contact face multipliers, carried forces,
        attachments and masks; the reaction on the tools; the scope; the RNG. Equal checksums =
        the same run."""
        h = hashlib.sha256()
        h.update(np.int64(self.tick_count).tobytes())
        h.update(np.int64(self.topology_version).tobytes())
        self._scissors.hash_into(h)
        self._refactor.hash_into(h)
        self.rigid.hash_into(h)
        if self.tissue is not None:
            h.update(self.tissue.tets.tobytes())
            h.update(self.tissue.rest.tobytes())
        if self.tissue_state is not None:
            hash_tissue_state(h, self.tissue_state)
            h.update(self._contacts.force.tobytes())
        if self.contact is not None:
            self.contact.hash_into(h)
        if self.injury is not None:
            self.injury.hash_into(h)
        h.update(self.reaction.tobytes())
        h.update(repr(self._grasped_obj).encode())
        h.update(self.scope.params().tobytes())
        h.update(repr(self.rng.bit_generator.state).encode())
        return h.hexdigest()

    def close(self) -> None:
        """Disconnect PyBullet."""
        self.rigid.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_scene(name: str = "default", *, seed: int = 0, **overrides) -> Scene:
    """Build a built-in scene (see the module docstring), e.g. build_scene("default", tissue_tets=1000);
    seed seeds `scene.rng`."""
    return Scene(scene_config(name, **overrides), seed=seed)
