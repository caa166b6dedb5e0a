"""ToolScene: PyBullet world + instruments behind ports + virtual coupling + rigid-object grasping.

Owns step 3 of the tick in ../shared/ARCHITECTURE.md for the rigid part of the world: each tool proxy
follows its projected target through a virtual coupling, the fulcrum holds by the joint chain
(`sim.instruments`), rigid objects collide with the tools, and closing jaws on a ring or clip grasps
it. `tick(targets, jaw_commands, dt)` returns the per-tool coupling force. It will be merged into the
full Scene together with the tissue.

Virtual coupling (per tool, at the tool tip x, in world coordinates):

    F = k (x_t - x) + B (v_t - v),      B = 2 sqrt(k) Lambda^(1/2)

x_t is the target tip after port projection (`sim.ports.project_tip_target`), v_t its finite
difference, Lambda = J^-T M J^-1 the tip's task-space inertia from PyBullet's joint-space mass matrix
M of (a, b, s), so every mode of the tip is critically damped whatever the insertion depth; |F| is
saturated at `sim.coupling_kernels.MAX_COUPLING_FORCE` (15 N). F is
applied as joint torques J^T F plus PyBullet's gravity torques (the hand carries the instrument's
weight, so gravity does not show up as a coupling force); roll follows its target through a joint
spring-damper with the same natural frequency. F is returned: it is the force on the proxy; the hand
(device) feels -F.

Stability at 1 kHz: the torques are explicit, PyBullet integrates semi-implicitly, so each mode needs
omega dt well below ~1.2 with omega = sqrt(k / lambda_min(Lambda)). The lightest mode (lateral, deepest
insertion) is 0.040 kg for the 0.15 kg grasper, so the default k = 500 N/m gives omega dt = 0.11.
`ToolScene` refuses a stiffness that would make omega dt > 0.5 at the most extreme insertion, and
never more than the device's max stiffness at 1 kHz when one is given.

Grasping rigid objects: friction between position-servoed jaws and a 2 g ring is not reliable at
1 kHz (the ring squirts out), so when a tool's jaw command is closed (< GRASP_CLOSE rad) and both jaws
are within GRASP_REACH of a graspable body, a fixed constraint binds that body to the shaft link with
its current relative pose; opening the jaws (> GRASP_OPEN rad) removes it. While held, the body does
not collide with that tool; collision comes back once it is GRASP_REACH clear of the tool. Two tools
may hold one body at once (a hand-off), each through its own constraint.

Lockstep determinism: one DIRECT client per scene, fixed step, deterministic pair ordering, no
wall-clock input; the same inputs give bit-identical poses (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pybullet as pb

from sim import coupling_kernels as ck
from sim import ports, rigid_world
from sim.instruments import ARM_JOINTS, LINK_SHAFT, Instrument, InstrumentSpec
from sim.scene_state import copy_attrs, hash_attrs, restore_attrs

_ALL_JOINTS = list(range(6))

GRASP_CLOSE = 0.15  # [rad] jaw command below which the tool tries to grasp
GRASP_OPEN = 0.25  # [rad] jaw command above which a grasp is released (hysteresis)
GRASP_REACH = 1.5e-3  # [m] how near both jaws must be to the object
DEFAULT_STIFFNESS = 500.0  # [N/m]
MAX_OMEGA_DT = 0.5


@dataclass(frozen=True)
class ToolSetup:
    """One tool in the scene: what instrument, through which port, initial depth [m]."""

    spec: InstrumentSpec
    port: ports.Port
    depth: float = 0.15


def critical_damping(k: float, task_inertia: np.ndarray) -> np.ndarray:
    """Damping matrix B = 2 sqrt(k) Lambda^(1/2) [N s/m], shape (3, 3).

    k: stiffness [N/m]; task_inertia: Lambda [kg], shape (3, 3), symmetric positive definite. Every mode
    of Lambda x'' = -k x - B x' is then critically damped.
    """
    w, v = np.linalg.eigh(0.5 * (task_inertia + task_inertia.T))
    return 2.0 * np.sqrt(k) * (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def coupling_force(k: float, damping: np.ndarray, x_target: np.ndarray, x: np.ndarray,
                   v_target: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spring-damper force on the proxy [N], shape (3,): k (x_t - x) + B (v_t - v), its magnitude
    saturated at `MAX_COUPLING_FORCE`."""
    f = k * (x_target - x) + damping @ (v_target - v)
    mag = float(np.linalg.norm(f))
    return f * (ck.MAX_COUPLING_FORCE / mag) if mag > ck.MAX_COUPLING_FORCE else f


class ToolScene:
    """Rigid world + tools, advanced in lockstep by `tick`.

    Args:
        tools: the tools (instrument + port each).
        stiffness: coupling stiffness k [N/m].
        max_stiffness: the haptic device's max stable stiffness at 1 kHz [N/m], or None.
        pegboard: add the FLS-style peg-transfer board (spec or True for the default).
        dt: fixed physics step [s].
    """

    def __init__(self, tools: Sequence[ToolSetup], *, stiffness: float = DEFAULT_STIFFNESS,
                 max_stiffness: float | None = None,
                 pegboard: rigid_world.PegboardSpec | bool = True, dt: float = 1e-3) -> None:
        if max_stiffness is not None and stiffness > max_stiffness:
            raise ValueError(f"coupling stiffness {stiffness} N/m exceeds the device's {max_stiffness} N/m")
        self.stiffness = float(stiffness)
        self.dt = float(dt)
        self.client = rigid_world.make_client(self.dt)
        self.floor = rigid_world.add_floor(self.client)
        self.pegboard = None
        if pegboard:
            spec = pegboard if isinstance(pegboard, rigid_world.PegboardSpec) else None
            self.pegboard = rigid_world.add_pegboard(self.client, spec)
        self.graspable: list[int] = list(self.pegboard.rings) if self.pegboard else []
        self.tools = [Instrument(self.client, t.spec, t.port, depth=t.depth) for t in tools]
        n = len(self.tools)
        self._prev_target = np.array([inst.tip() for inst in self.tools]).reshape(-1, 3)
        self._q = np.zeros((len(self.tools), 4))
        self._qd = np.zeros((len(self.tools), 4))
        self._tau = np.zeros((len(self.tools), 4))
        self._jaw_cmd = np.full(len(self.tools), np.nan)
        self._target_roll = np.zeros(n)
        self.grasped: list[int | None] = [None] * n  # body id held by each tool
        self._constraint: list[int | None] = [None] * n
        self._no_collide: list[tuple[int, int]] = []  # (tool index, body) pairs with collision off
        self.last_target = self._prev_target.copy()
        self.last_force = np.zeros((n, 3))
        for inst in self.tools:
            self._check_stability(inst)

    # -- setup helpers -------------------------------------------------------------------------------

    def _check_stability(self, inst: Instrument) -> None:
        """Raise if k makes the lightest tip mode too fast for dt at the deepest insertion."""
        st = inst.read_state()
        q_saved = st.q.copy()
        worst = np.inf
        for s in (inst.spec.min_insert + 0.02, inst.spec.max_insert):
            pb.resetJointState(inst.body, 2, s, 0.0, physicsClientId=self.client)
            lam = self._task_inertia(inst, inst.read_state())
            worst = min(worst, float(np.linalg.eigvalsh(lam)[0]))
        pb.resetJointState(inst.body, 2, q_saved[2], 0.0, physicsClientId=self.client)
        omega_dt = np.sqrt(self.stiffness / worst) * self.dt
        if omega_dt > MAX_OMEGA_DT:
            raise ValueError(f"stiffness {self.stiffness} N/m unstable for {inst.spec.name} at dt={self.dt}: "
                             f"omega*dt = {omega_dt:.2f} > {MAX_OMEGA_DT}")

    def _task_inertia(self, inst: Instrument, st) -> np.ndarray:
        jac = ports.tip_jacobian(st.q[0], st.q[1], st.q[2])
        jinv = np.linalg.inv(jac)
        return jinv.T @ inst.mass_matrix(st)[:3, :3] @ jinv

    def settle(self, steps: int = 300) -> None:
        """Let the rigid objects come to rest with the tools held where they are."""
        targets = np.array([np.r_[inst.tip(), 0.0] for inst in self.tools])
        for _ in range(steps):
            self.tick(targets, np.zeros(len(self.tools)), self.dt)

    def add_clip(self, position: np.ndarray, **kwargs) -> int:
        """Add a released clip (graspable) at position [m] (3,); returns its body id."""
        body = rigid_world.add_clip(self.client, position, **kwargs)
        self.graspable.append(body)
        return body

    # -- the tick ------------------------------------------------------------------------------------

    def tick(self, targets: np.ndarray, jaw_commands: np.ndarray, dt: float) -> np.ndarray:
        """Advance one physics step.

        Args:
            targets: per tool (x, y, z [m], roll [rad]) of the commanded tool tip, shape (n_tools, 4);
                projected onto what the port allows before use.
            jaw_commands: total jaw opening per tool [rad], shape (n_tools,).
            dt: step [s]; must equal the scene's fixed step (the coupling gains are checked for it).

        Returns:
            Coupling force on each proxy [N], shape (n_tools, 3); the device should render -F.
        """
        if dt != self.dt:
            raise ValueError(f"tick dt {dt} != scene dt {self.dt}")
        targets = np.asarray(targets, dtype=np.float64)
        forces = np.zeros((len(self.tools), 3))
        k = self.stiffness
        zeros6 = [0.0] * 6
        for i, inst in enumerate(self.tools):
            spec = inst.spec
            js = pb.getJointStates(inst.body, _ALL_JOINTS, physicsClientId=self.client)
            positions = [j[0] for j in js]
            q, qd = self._q[i], self._qd[i]
            for n in range(4):
                q[n], qd[n] = js[n][0], js[n][1]
            mass = np.array(pb.calculateMassMatrix(inst.body, positions, physicsClientId=self.client))
            grav = np.array(pb.calculateInverseDynamics(inst.body, positions, zeros6, zeros6,
                                                        physicsClientId=self.client)[:4])
            ck.coupling_torques(inst.port_point, q, qd, mass[:4, :4], grav, targets[i], self._prev_target[i],
                                k, dt, inst.port.max_angle, spec.min_insert, spec.max_insert,
                                self._tau[i], forces[i], self.last_target[i])
            pb.setJointMotorControlArray(inst.body, list(ARM_JOINTS), pb.TORQUE_CONTROL,
                                         forces=self._tau[i].tolist(), physicsClientId=self.client)
            jaw = float(jaw_commands[i])
            if jaw != self._jaw_cmd[i]:  # the jaw servo target persists in PyBullet
                inst.set_jaw(jaw)
                self._jaw_cmd[i] = jaw
        pb.stepSimulation(physicsClientId=self.client)
        for i, inst in enumerate(self.tools):
            self._update_grasp(i, inst, float(jaw_commands[i]))
        self._restore_collisions()
        self.last_force = forces
        return forces

    # -- grasping ------------------------------------------------------------------------------------

    def _jaws_reach(self, inst: Instrument, body: int) -> bool:
        for link in (4, 5):
            pts = pb.getClosestPoints(inst.body, body, GRASP_REACH, linkIndexA=link,
                                      physicsClientId=self.client)
            if not pts:
                return False
        return True

    def _set_collision(self, inst: Instrument, body: int, enable: bool) -> None:
        for link in inst.link_ids():
            pb.setCollisionFilterPair(inst.body, body, link, -1, int(enable), physicsClientId=self.client)

    def _update_grasp(self, i: int, inst: Instrument, jaw: float) -> None:
        if not inst.spec.has_jaws:
            return
        held = self.grasped[i]
        if held is None and jaw < GRASP_CLOSE and self.graspable:
            tip = inst.tip()
            # A body another tool holds may be grasped too: that is the mid-air hand-off of the FLS
            # peg transfer (both constraints hold it until the first tool opens).
            for body in self.graspable:
                # Cheap pre-filter before the narrow-phase query: graspables are < 3 cm across.
                centre = np.array(pb.getBasePositionAndOrientation(body, physicsClientId=self.client)[0])
                near = np.linalg.norm(centre - tip) < 0.03 + inst.spec.jaw_length
                if not (near and self._jaws_reach(inst, body)):
                    continue
                ls = pb.getLinkState(inst.body, LINK_SHAFT, computeForwardKinematics=1,
                                     physicsClientId=self.client)
                pos, orn = pb.getBasePositionAndOrientation(body, physicsClientId=self.client)
                inv_p, inv_o = pb.invertTransform(ls[0], ls[1])
                rel_p, rel_o = pb.multiplyTransforms(inv_p, inv_o, pos, orn)
                cid = pb.createConstraint(inst.body, LINK_SHAFT, body, -1, pb.JOINT_FIXED, [0, 0, 0],
                                          rel_p, [0, 0, 0], rel_o, [0, 0, 0, 1], physicsClientId=self.client)
                pb.changeConstraint(cid, maxForce=20.0, physicsClientId=self.client)
                self._set_collision(inst, body, False)
                if (i, body) not in self._no_collide:
                    self._no_collide.append((i, body))
                self.grasped[i], self._constraint[i] = body, cid
                break
        elif held is not None and jaw > GRASP_OPEN:
            pb.removeConstraint(self._constraint[i], physicsClientId=self.client)
            self.grasped[i], self._constraint[i] = None, None

    def _restore_collisions(self) -> None:
        keep = []
        for i, body in self._no_collide:
            inst = self.tools[i]
            if self.grasped[i] != body and not pb.getClosestPoints(inst.body, body, GRASP_REACH,
                                                                   physicsClientId=self.client):
                self._set_collision(inst, body, True)
            else:
                keep.append((i, body))
        self._no_collide = keep

    # -- state ---------------------------------------------------------------------------------------

    _NOT_STATE = frozenset({"tools", "client", "floor", "pegboard", "graspable", "stiffness", "dt",
                            "_constraint", "_no_collide"})

    def get_state(self) -> dict:
        """Everything dynamic (see sim.scene_state): a PyBullet saveState id plus copies of the
        grasps, the collision filters off and this object's arrays. Free with pb.removeState."""
        grasps = []
        for cid in self._constraint:
            if cid is None:
                grasps.append(None)
                continue
            # (parentBody, parentLink, childBody, childLink, type, axis, parentFramePos,
            #  childFramePos, parentFrameOrn, childFrameOrn, maxForce, ...)
            info = pb.getConstraintInfo(cid, physicsClientId=self.client)
            grasps.append((int(info[2]), tuple(info[6]), tuple(info[8]), float(info[10])))
        state = {"bullet": pb.saveState(physicsClientId=self.client), "client": self.client,
                 "grasps": grasps, "no_collide": list(self._no_collide),
                 "attrs": copy_attrs(self, self._NOT_STATE)}
        # Continue from the restored state, as every set_state will (see _drop_contact_cache).
        self.set_state(state)
        return state

    def set_state(self, state: dict) -> None:
        """Restore `get_state()` output in place (same world): bodies and joints through
        pb.restoreState; grasp constraints, collision filters and jaw servo targets by hand (they
        are not in PyBullet's saved state)."""
        for cid in self._constraint:
            if cid is not None:
                pb.removeConstraint(cid, physicsClientId=self.client)
        for i, body in self._no_collide:
            self._set_collision(self.tools[i], body, True)
        self._drop_contact_cache()
        pb.restoreState(state["bullet"], physicsClientId=self.client)
        restore_attrs(self, state["attrs"])
        for i, g in enumerate(state["grasps"]):
            self._constraint[i] = None
            if g is not None:
                body, ppos, porn, max_force = g
                cid = pb.createConstraint(self.tools[i].body, LINK_SHAFT, body, -1, pb.JOINT_FIXED, [0, 0, 0],
                                          ppos, [0, 0, 0], porn, [0, 0, 0, 1], physicsClientId=self.client)
                pb.changeConstraint(cid, maxForce=max_force, physicsClientId=self.client)
                self._constraint[i] = cid
        self._no_collide = list(state["no_collide"])
        for i, body in self._no_collide:
            self._set_collision(self.tools[i], body, False)
        for i, inst in enumerate(self.tools):
            if not np.isnan(self._jaw_cmd[i]):
                inst.set_jaw(float(self._jaw_cmd[i]))

    def _drop_contact_cache(self) -> None:
        """Empty Bullet's persistent contact manifolds (their warm-start impulses are not all in
        saveState, and stale ones would make every restore continue a little differently, ~1e-8 m):
        park each moving body far from everything, let the broadphase drop the pairs; the caller
        then restores the poses. After this every restore of one state continues bit-identically."""
        for k, body in enumerate([t.body for t in self.tools] + list(self.graspable)):
            pb.resetBasePositionAndOrientation(body, (1000.0 + 10.0 * k, 1000.0, 1000.0), (0, 0, 0, 1),
                                               physicsClientId=self.client)
        pb.performCollisionDetection(physicsClientId=self.client)

    def hash_into(self, h) -> None:
        """Feed the dynamic state into a hashlib object: joints (position, velocity), rigid bodies
        (pose, velocity), coupling targets and the other arrays, grasps and collision filters."""
        for tool in self.tools:
            js = pb.getJointStates(tool.body, list(range(6)), physicsClientId=self.client)
            h.update(np.array([(j[0], j[1]) for j in js], dtype=np.float64).tobytes())
        for b in self.graspable:
            p, o = pb.getBasePositionAndOrientation(b, physicsClientId=self.client)
            lv, av = pb.getBaseVelocity(b, physicsClientId=self.client)
            h.update(np.array([*p, *o, *lv, *av], dtype=np.float64).tobytes())
        hash_attrs(h, self, self._NOT_STATE)
        h.update(repr(([c is not None for c in self._constraint], sorted(self._no_collide))).encode())

    # -- reading -------------------------------------------------------------------------------------

    def tool_poses(self) -> np.ndarray:
        """Joint coordinates of all tools, shape (n_tools, 5): a, b [rad], s [m], roll, jaw [rad]."""
        out = np.zeros((len(self.tools), 5))
        for i, inst in enumerate(self.tools):
            st = inst.read_state()
            out[i, :4], out[i, 4] = st.q, st.jaw
        return out

    def body_pose(self, body: int) -> np.ndarray:
        """Position [m] and quaternion (x, y, z, w) of a rigid body, shape (7,)."""
        p, o = pb.getBasePositionAndOrientation(body, physicsClientId=self.client)
        return np.array([*p, *o], dtype=np.float64)

    def close(self) -> None:
        """Disconnect the PyBullet client."""
        if self.client is not None:
            pb.disconnect(physicsClientId=self.client)
            self.client = None

    def __enter__(self) -> ToolScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
