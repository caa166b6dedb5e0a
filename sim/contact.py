"""Tool-tissue contact and tissue grasping (steps 4 and 6 of the tick in ../shared/ARCHITECTURE.md).

Geometry: each tool is three capsules read from PyBullet's link poses every tick: the lower
SHAFT_CONTACT_LENGTH of the shaft (radius = shaft radius) and one per jaw, hinge to jaw tip (radius =
half the jaw width; curved jaws are straightened hinge-to-tip). They meet the tissue's surface nodes
(Numba, box pre-filter per capsule).

Method: hard, position-level node constraints with forces carried between steps.
- After the tissue step, every surface node inside a capsule is pushed out to its surface along the
  axis-to-node direction. The push d also sets v += d / dt (an inelastic contact) and adds
  m d / dt^2 to the node force f carried into the next step as an external load. The next implicit
  step therefore already holds the node against its elastic push; the correction left over shrinks
  every tick, so at rest the carried force equals the elastic reaction (the indentation test checks
  it against linear FEM).
- Complementarity per node: a node that drifted up to `margin` off the capsule is pulled back only
  as far as its carried push allows (the tool pushes, never pulls); beyond the band it drops it.
- Friction: the carried tangential force plus what would stop the node sliding on the tool, clamped
  to |f_t| <= mu f_n (Coulomb, stick/slip per node).
- The sum of -f over a tool's nodes is the tissue's force on the tool [N]; it is applied to the
  tool's shaft link in PyBullet at the force-weighted contact point on the next tick, so the
  virtual coupling stretches against it and the hand feels it through the coupling.
Why not penalty springs: one stiff enough to stop a tool would need the implicit matrix refactored
whenever contacts change (~0.2 s at 5k tets), and an explicit one is unstable at 1 kHz.

Faces: a tip landing inside a triangle (5k pad: ~5 mm node spacing, 2.25 mm jaw radius) meets no
node. Each face in contact carries its own normal force between steps (one multiplier per face, so
complementarity is per face, not per corner), spread over its corners by barycentric weights. Corners
held by a node contact take no share, and a face whose contact point sits mostly on such corners is
left to the node: the dimple around a pressed node grazes the capsule all round, and letting those
faces push as well made the contact chatter (docs/instruments.md, "Limits").

Grasping: when a tool's jaw command starts to close (it drops below its last value while above
GRASP_CLOSE), the tissue nodes between its open jaws are its bite: the jaws stop pushing them, so they
are not swept out sideways while the jaws close (a gripper closes over ~0.1-0.3 s, and a converged
step otherwise expels a coarse mesh's nodes before the jaws are shut). Reopening by BITE_REOPEN drops
the bite. When the command crosses below GRASP_CLOSE, the bite ends and the tissue nodes between its jaws
(inside the wedge the open jaws span, within half a jaw width + BITE_SIDE_MARGIN sideways, down to a jaw
radius + 1 mm below the tips) and the nodes
pressed by its jaws (in contact with them at that moment: a pinch) are attached with
their current position in the shaft frame; they follow the jaws as bilateral constraints with the
same carried-force scheme. Opening past GRASP_OPEN releases them. If the force pulling on the grasped
nodes exceeds the grip limit 2 mu_grip N (N = jaw_max_torque / (jaw_length / 2) per jaw, mu_grip =
GRIP_MU), the tissue slips out: the nodes are released and a 'slip' event is recorded.
Scissors (`cutters`) bite the same way but never grasp (`_blade_bite`): what lies between their
blades is cut at the snip (sim.scene_topology), not pushed aside, so their bite lasts until the snip.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb

from sim import contact_kernels as ck
from sim import instruments as inst
from sim.scene_state import copy_attrs, hash_attrs, restore_attrs
from sim.tissue import TissueState
from sim.tissue_model import TissueModel
from sim.tool_scene import GRASP_CLOSE, GRASP_OPEN

SHAFT_CONTACT_LENGTH = 0.12  # [m] of shaft above the jaw hinge that can touch tissue
GRIP_MU = 0.3  # wet tissue on atraumatic jaws
DEFAULT_MU = 0.3  # tool-tissue friction
DEFAULT_MARGIN = 2e-4  # [m]
#: [m] beyond each side of a jaw that a bite still catches: closing jaws draw the surface in from
#: their sides, and on a mesh coarser than the jaw (the 1k pad: ~8 mm between nodes, 4.5 mm jaws)
#: a node a millimetre past the jaw's edge is what holds the bitten tissue.
BITE_SIDE_MARGIN = 1.5e-3
BITE_REOPEN = 0.05  # [rad] the jaw command reopening past where a bite began drops it (gripper noise)


def grip_limit(spec: inst.InstrumentSpec) -> float:
    """Largest pull [N] the jaws hold tissue against before it slips out."""
    if not spec.has_jaws:
        return 0.0
    return 2.0 * GRIP_MU * spec.jaw_max_torque / (0.5 * spec.jaw_length)


def _local_segments(spec: inst.InstrumentSpec) -> tuple[np.ndarray, np.ndarray]:
    """Capsule segment ends in their link frames, (3, 6) [m], and radii (3,) [m]."""
    jl = spec.jaw_length
    seg = np.zeros((3, 6))
    seg[0] = (0.0, 0.0, jl, 0.0, 0.0, jl + SHAFT_CONTACT_LENGTH)
    # A grasper's jaw is a capsule of half its width; a blade (scissors, clip applier: tools that
    # do not grasp tissue) one of half its thickness: a fat capsule round a thin blade squeezed
    # the tissue between the closing blades from both sides (gauze and duct blew up).
    jaw_r = 0.5 * (spec.jaw_width if spec.grasps_tissue else spec.jaw_thickness)
    rad = np.array([spec.shaft_radius, jaw_r, jaw_r])
    if spec.has_jaws:
        l1, l2, c = 0.6 * jl, 0.4 * jl, spec.jaw_curve
        for k, side in ((1, 1.0), (2, -1.0)):
            y = side * (spec.jaw_gap / 2 + spec.jaw_thickness / 2)
            seg[k] = (0.0, y, 0.0, np.sin(c) * l2, y, -l1 - np.cos(c) * l2)
    else:  # the scope: its jaw links carry nothing; a zero-length capsule inside the shaft
        rad[1:] = spec.shaft_radius
    return seg, rad


def _tri_keys(tris: np.ndarray) -> np.ndarray:
    """An int64 key per triangle (k, 3) that keeps its corner order up to rotation (node ids < 2^21)."""
    t = np.asarray(tris, dtype=np.int64)
    r = np.argmin(t, axis=1)
    t = np.take_along_axis(t, (r[:, None] + np.arange(3)) % 3, axis=1)
    return (t[:, 0] << 42) | (t[:, 1] << 21) | t[:, 2]


class ToolTissueContact:
    """Tool capsules against one tissue body, plus grasp attachments.

    Args:
        model: the tissue. tools: the scene's instruments (index = control row). dt: step [s].
        mu: tool-tissue friction coefficient; margin: contact band [m]; iters: Gauss-Seidel sweeps
        (3: with 2, a node wedged between two jaw-tip capsules by a 0.5 m/s jab stayed up to 10 um
        inside one once node frames became averages, `sim.tissue_solver.node_frame`).
    """

    def __init__(self, model: TissueModel, tools: list[inst.Instrument], dt: float, *, mu: float = DEFAULT_MU,
                 margin: float = DEFAULT_MARGIN, iters: int = 3, cutters: tuple[int, ...] = ()) -> None:
        self.model, self.tools, self.dt = model, tools, float(dt)
        self.cutters = frozenset(int(i) for i in cutters)  # tools whose jaws cut instead of grasping
        self.mu, self.margin, self.iters = float(mu), float(margin), int(iters)
        t, n = len(tools), model.node_count
        self.local_seg = np.zeros((t, 3, 6))
        self.radius = np.zeros((t, 3))
        for i, tool in enumerate(tools):
            self.local_seg[i], self.radius[i] = _local_segments(tool.spec)
        self.grip = np.array([grip_limit(tool.spec) for tool in tools])
        self.link_pose = np.zeros((t, 3, 7))
        self.caps = np.zeros((3 * t, 7))
        self.caps_prev = np.zeros((3 * t, 7))
        self.cap_tool = np.repeat(np.arange(t, dtype=np.int64), 3)
        self.frame_r = np.zeros((t, 3, 3))
        self.frame_p = np.zeros((t, 3))
        self.tris = np.ascontiguousarray(model.surface, dtype=np.int64)
        self.surf_nodes = np.unique(self.tris)
        self.mass = model.mass
        self.inv_mass = np.where(model.fixed, 0.0, 1.0 / model.mass)
        self.normal = np.zeros((n, 3))
        self.touched = np.zeros(n, dtype=np.int64)
        self.skip = np.zeros(n, dtype=np.bool_)
        self.corr = np.zeros((n, 3))
        self.tri_box = np.zeros((self.tris.shape[0], 10))
        self.near = np.zeros(3 * t, dtype=np.int64)
        nt = self.tris.shape[0]
        self.lam_face = np.zeros(nt)
        self.face_tool = np.zeros(nt, dtype=np.int64)
        self.face_dir = np.zeros((nt, 3))
        self.face_w = np.zeros((nt, 3))
        self.face_on = np.zeros(nt, dtype=np.int64)
        self.f_face = np.zeros((n, 3))
        self.f_node = np.zeros((n, 3))  # carried node forces (contacts and attachments)
        # Longest surface edge at rest, with room for stretching: a face point lies within it of a corner.
        tri_x = model.rest[self.tris]
        self.edge = 2.0 * float(np.max(np.linalg.norm(tri_x - np.roll(tri_x, 1, axis=1), axis=2)))
        self.tool_force = np.zeros((t, 3))
        self.tool_point = np.zeros((t, 4))
        self.att_node = np.zeros(0, dtype=np.int64)
        self.att_tool = np.zeros(0, dtype=np.int64)
        self.att_local = np.zeros((0, 3))
        self.grasping = [False] * t
        self.bite_node = np.zeros(0, dtype=np.int64)  # nodes between closing jaws (not yet grasped)
        self.bite_tool = np.zeros(0, dtype=np.int64)
        self.bite_from = np.full(t, np.inf)  # [rad] jaw command where each tool's bite began; inf: none
        self._jaw_prev = np.full(t, np.inf)
        self._events: list[tuple[str, int, float, str]] = []
        self._read_links()
        self.caps_prev[:] = self.caps

    # -- per tick ------------------------------------------------------------------------------------

    def _read_links(self) -> None:
        inst.read_link_poses(self.tools, self.link_pose)
        ck.build_capsules(self.link_pose, self.local_seg, self.radius, self.caps, self.frame_r, self.frame_p)

    def apply_reaction(self) -> None:
        """Apply last tick's tissue force to each tool's shaft link (before stepSimulation)."""
        for i, tool in enumerate(self.tools):
            w = self.tool_point[i, 3]
            if w <= 0.0:
                continue
            point = (self.tool_point[i, :3] / w).tolist()
            pb.applyExternalForce(tool.body, inst.LINK_SHAFT, self.tool_force[i].tolist(), point,
                                  pb.WORLD_FRAME, physicsClientId=tool.client)

    def before_step(self, state: TissueState, jaws: np.ndarray) -> None:
        """Read the tools' new link poses; start or end grasps from the jaw commands [rad] (n_tools,)."""
        self.caps_prev[:] = self.caps
        self._read_links()
        for i, tool in enumerate(self.tools):
            if i in self.cutters:
                self._blade_bite(i, tool, state.x, float(jaws[i]))
                continue
            if not (tool.spec.has_jaws and tool.spec.grasps_tissue):
                continue
            jaw = float(jaws[i])
            prev = self._jaw_prev[i]
            if self.grasping[i] and jaw > GRASP_OPEN:
                self._release(i, "release", 0.0, f"tool {i} released the tissue")
            elif not self.grasping[i] and jaw < GRASP_CLOSE <= prev:
                self._grasp(i, tool, state.x)
            elif not self.grasping[i] and GRASP_CLOSE <= jaw < prev and prev < np.inf \
                    and self.bite_from[i] == np.inf:
                self._bite(i, tool, state.x, prev)
            elif self.bite_from[i] < np.inf and jaw > self.bite_from[i] + BITE_REOPEN:
                self._drop_bite(i)
            self._jaw_prev[i] = jaw

    def after_step(self, state: TissueState, f_ext: np.ndarray, reaction: np.ndarray) -> None:
        """Project the tissue out of the tools and onto the jaws; reaction (n_tools, 3) [N] out.

        f_ext (n, 3) [N] receives the node forces the next step carries (node + face contacts).
        """
        self.touched[:] = 0
        f_node = self.f_node
        if self.att_node.size:
            ck.attach_project(self.att_node, self.att_tool, self.att_local, self.frame_r, self.frame_p,
                              self.mass, self.dt, state.x, state.v, f_node, self.touched)
        ck.contact_project(self.caps, self.caps_prev, self.cap_tool, self.tris, self.surf_nodes, state.x,
                           state.v, self.mass, self.inv_mass, self.dt, self.margin, self.mu, self.iters,
                           self.edge, f_node, self.normal, self.touched, self.skip, self.corr, self.tri_box,
                           self.near, self.lam_face, self.face_tool, self.face_dir, self.face_w,
                           self.face_on, self.f_face, self.tool_force, self.tool_point)
        if self.att_node.size:
            for i in range(len(self.tools)):
                if self.grasping[i]:
                    pull = np.linalg.norm(f_node[self.att_node[self.att_tool == i]].sum(axis=0))
                    if pull > self.grip[i]:
                        self._release(i, "slip", pull, f"tissue slipped out of tool {i}'s jaws at "
                                      f"{pull:.2f} N (grip limit {self.grip[i]:.2f} N)")
        np.add(f_node, self.f_face, out=f_ext)
        reaction[:] = self.tool_force

    def retopologize(self, model: TissueModel, node_source: np.ndarray | None = None) -> None:
        """Follow a new tissue topology (sim.tissue_topology; node ids stable, nodes appended):
        surface, masses and per-node arrays (new nodes start with no contact memory), per-face
        memory carried over for faces whose corners did not change. node_source None: the arrays
        are about to be overwritten by `set_state` (only their shapes matter)."""
        n_old, n = self.model.node_count, model.node_count
        old_keys = _tri_keys(self.tris)
        self.model = model
        self.tris = np.ascontiguousarray(model.surface, dtype=np.int64)
        self.surf_nodes = np.unique(self.tris)
        self.mass = model.mass
        with np.errstate(divide="ignore"):
            self.inv_mass = np.where(model.fixed | (model.mass <= 0.0), 0.0, 1.0 / model.mass)
        tri_x = model.rest[self.tris]
        self.edge = 2.0 * float(np.max(np.linalg.norm(tri_x - np.roll(tri_x, 1, axis=1), axis=2)))
        keep = min(n_old, n)
        for name in ("normal", "touched", "skip", "corr", "f_face", "f_node"):
            old = getattr(self, name)
            new = np.zeros((n,) + old.shape[1:], dtype=old.dtype)
            new[:keep] = old[:keep]
            setattr(self, name, new)
        new_keys = _tri_keys(self.tris)
        order = np.argsort(old_keys)
        pos = np.minimum(np.searchsorted(old_keys, new_keys, sorter=order), max(len(order) - 1, 0))
        same = (old_keys[order[pos]] == new_keys) if len(order) else np.zeros(len(new_keys), bool)
        src = order[pos]
        for name in ("tri_box", "lam_face", "face_tool", "face_dir", "face_w", "face_on"):
            old = getattr(self, name)
            new = np.zeros((len(new_keys),) + old.shape[1:], dtype=old.dtype)
            new[same] = old[src[same]]
            setattr(self, name, new)

    # -- grasping ------------------------------------------------------------------------------------

    def _between(self, i: int, tool: inst.Instrument, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nodes between tool i's jaws as they are now (mask (n,)) and every node in its shaft frame
        [m] (n, 3); with the pinched ones (touching its jaws) included in the mask."""
        spec = tool.spec
        jl, half = spec.jaw_length, 0.5 * tool.read_state().jaw
        rot, origin = self.frame_r[i], self.frame_p[i]
        local = (x - origin) @ rot  # node positions in the shaft frame
        along = jl - local[:, 2]  # distance from the hinge toward the tip [m]
        wedge = along * np.tan(max(half, 0.0)) + spec.jaw_thickness + spec.jaw_gap / 2
        # Down to a jaw radius + 1 mm below the tips: the closing jaws push the tissue they meet
        # ahead of them, and that is what they pinch.
        below = -0.5 * spec.jaw_width - 1e-3
        between = ((local[:, 2] >= below) & (along >= 0.0)
                   & (np.abs(local[:, 0]) <= 0.5 * spec.jaw_width + BITE_SIDE_MARGIN)
                   & (np.abs(local[:, 1]) <= wedge))
        # Tissue the jaws press on is pinched too: the nodes touching this tool's jaws.
        pinched = (self.touched == i + 1) & (along >= 0.0) & (local[:, 2] >= below)
        return between | pinched, local

    def _bite(self, i: int, tool: inst.Instrument, x: np.ndarray, jaw: float) -> None:
        """The jaws began closing from jaw [rad]: what is between them now is held as the bite."""
        mask, _ = self._between(i, tool, x)
        nodes = np.flatnonzero(mask & ~self.skip & (self.inv_mass > 0.0))
        self.bite_from[i] = jaw
        self.bite_node = np.concatenate([self.bite_node, nodes])
        self.bite_tool = np.concatenate([self.bite_tool, np.full(nodes.size, i, dtype=np.int64)])
        self.skip[nodes] = True

    def _blade_bite(self, i: int, tool: inst.Instrument, x: np.ndarray, jaw: float) -> None:
        """Scissors: the tissue between the blades when they start to close is theirs to cut, not
        to push. The blades stop pushing it until the snip (the jaw command below GRASP_CLOSE: the
        scene cuts along the swept surface in that tick) or until they reopen by BITE_REOPEN.
        Pushed, a thin sheet lying across the blades was squeezed edgewise between them (the 2 mm
        gauze's elements flattened to ~1 % of their volume as the expert's first snip closed) and
        the crushed patch kept the tissue step at its iteration cap for the rest of the attempt
        (docs/cutting.md, "Blades do not crush")."""
        prev = self._jaw_prev[i]
        self._jaw_prev[i] = jaw
        if self.bite_from[i] < np.inf:
            if jaw < GRASP_CLOSE or jaw > self.bite_from[i] + BITE_REOPEN:
                self._drop_bite(i)
        elif GRASP_CLOSE <= jaw < prev < np.inf:
            self._bite(i, tool, x, prev)
            # and their carried push with it (it would go on pushing them, as a stale load,
            # for the whole closing)
            self.f_node[self.bite_node[self.bite_tool == i]] = 0.0

    def _drop_bite(self, i: int) -> np.ndarray:
        """End tool i's bite; returns its nodes (their contact is back on)."""
        mine = self.bite_tool == i
        nodes = self.bite_node[mine]
        self.skip[nodes] = False
        self.bite_node, self.bite_tool = self.bite_node[~mine], self.bite_tool[~mine]
        self.bite_from[i] = np.inf
        return nodes

    def _grasp(self, i: int, tool: inst.Instrument, x: np.ndarray) -> None:
        self._drop_bite(i)
        mask, local = self._between(i, tool, x)
        inside = mask & ~self.skip & (self.inv_mass > 0.0)
        nodes = np.flatnonzero(inside)
        if nodes.size == 0:
            return
        self.att_node = np.concatenate([self.att_node, nodes])
        self.att_tool = np.concatenate([self.att_tool, np.full(nodes.size, i, dtype=np.int64)])
        self.att_local = np.concatenate([self.att_local, local[nodes]])
        self.skip[nodes] = True
        self.grasping[i] = True
        self._events.append(("grasp", i, float(nodes.size), f"tool {i} grasped {nodes.size} tissue node(s)"))

    def release(self, i: int, kind: str, value: float, message: str) -> None:
        """End tool i's grasp now (its nodes back in contact; event (kind, i, value, message)): the
        injury stage's grasp-site tear (`sim.tissue_injury`), the tissue torn out of the jaws."""
        if self.grasping[i]:
            self._release(i, kind, value, message)

    def _release(self, i: int, kind: str, value: float, message: str) -> None:
        mine = self.att_tool == i
        nodes = self.att_node[mine]
        self.f_node[nodes] = 0.0
        self.skip[nodes] = False
        keep = ~mine
        self.att_node, self.att_tool = self.att_node[keep], self.att_tool[keep]
        self.att_local = self.att_local[keep]
        self.grasping[i] = False
        self._events.append((kind, i, value, message))

    def reset(self) -> None:
        """Drop every attachment and contact memory (after a tissue reset)."""
        self.att_node = self.att_node[:0]
        self.att_tool = self.att_tool[:0]
        self.att_local = self.att_local[:0]
        self.bite_node = self.bite_node[:0]
        self.bite_tool = self.bite_tool[:0]
        self.bite_from[:] = np.inf
        self.skip[:] = False
        self.normal[:] = 0.0
        self.f_node[:] = 0.0
        self.f_face[:] = 0.0
        self.lam_face[:] = 0.0
        self.face_tool[:] = 0
        self.tool_force[:] = 0.0
        self.tool_point[:] = 0.0
        self.grasping = [False] * len(self.tools)

    # -- state ---------------------------------------------------------------------------------------

    _NOT_STATE = frozenset({"model", "tools", "dt", "mu", "margin", "iters", "local_seg", "radius", "grip",
                            "cutters", "cap_tool", "tris", "surf_nodes", "mass", "inv_mass", "edge",
                            "_events"})

    def get_state(self) -> dict:
        """Copies of everything that carries over between ticks: previous capsules, face multipliers,
        carried forces, reaction and its point, attachments, masks, jaw memory (sim.scene_state)."""
        return copy_attrs(self, self._NOT_STATE)

    def set_state(self, state: dict) -> None:
        """Restore `get_state()` output in place; pending events are dropped."""
        restore_attrs(self, state)
        self._events = []

    def hash_into(self, h) -> None:
        """Feed the state of `get_state()` into a hashlib object."""
        hash_attrs(h, self, self._NOT_STATE)

    def attached_nodes(self, tool: int) -> np.ndarray:
        """Tissue node ids currently held by a tool's jaws."""
        return self.att_node[self.att_tool == tool].copy()

    def drain_events(self) -> list[tuple[str, int, float, str]]:
        """Events since the last call: (kind, tool, value, message)."""
        out, self._events = self._events, []
        return out
