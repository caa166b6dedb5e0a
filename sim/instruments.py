"""Laparoscopic instruments: parametric specs, generated URDF, and the PyBullet body behind a port.

Owns what an instrument *is* (`InstrumentSpec`, the catalogue `GRASPER`, `MARYLAND`, `SCISSORS`,
`CLIP_APPLIER`, `SCOPE_0`, `SCOPE_30`), the URDF generated from a spec, and `Instrument`: one loaded
PyBullet multibody whose fixed base sits at its trocar port. The joint chain realises the port
coordinates of `sim.ports` exactly (gimbal a, gimbal b, insertion s, roll r, then two jaw hinges), so
the shaft passes through the fulcrum by construction; the virtual coupling drives a, b, s, r with
torques/forces, the jaws are position-servoed with a torque limit (the grip).

Link frames: the roll link ("shaft") has its origin at the tool tip, its local -z pointing from the port
toward the tip (the shaft runs along local +z from the tip up to the handle), the jaws open in its
local y-z plane (jaw A toward +y, jaw B toward -y). The tool tip is the point on the shaft axis one jaw
length beyond the jaw hinge, i.e. the tip of the closed jaws. Units: m, kg, rad, N, N m.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pybullet as pb

from sim import ports

# Joint indices in the generated URDF (PyBullet numbers joints in document order).
JOINT_A, JOINT_B, JOINT_INSERT, JOINT_ROLL, JOINT_JAW_A, JOINT_JAW_B = range(6)
#: The link whose frame origin is the tool tip and whose -z axis is the shaft direction.
LINK_SHAFT = JOINT_ROLL
ARM_JOINTS = (JOINT_A, JOINT_B, JOINT_INSERT, JOINT_ROLL)


@dataclass(frozen=True)
class InstrumentSpec:
    """Geometry and mass of one instrument (real-world sizes, see docs/instruments.md).

    Attributes:
        name: catalogue name.
        shaft_length: shaft from the jaw hinge to the handle [m] (5 mm instruments: 0.33-0.36 m).
        shaft_radius: [m] (5 mm instruments: 2.5e-3; 10 mm laparoscope: 5e-3).
        jaw_length: hinge to jaw tip [m] (0 for the scope: no jaws).
        jaw_width: jaw size across the opening plane [m].
        jaw_thickness: one jaw's thickness in the opening direction [m].
        jaw_curve: lateral bend of the distal 40 % of each jaw [rad] (Maryland, curved scissors).
        jaw_gap: gap left between the closed jaws [m] (room for a clip in the clip applier).
        jaw_open_max: largest total opening angle between the jaws [rad].
        jaw_max_torque: hinge torque limit per jaw [N m]; the grip force at the jaw middle is about
            jaw_max_torque / (jaw_length / 2).
        mass: moving mass of shaft + jaws + the handle share carried by the coupling [kg].
        view_angle: scope only: angle of the view direction from the shaft axis [rad].
        max_insert: largest insertion depth (port to tip) [m]; the handle stays outside.
        grasps_tissue: closing the jaws on tissue grasps it (False for the clip applier, whose
            closing fires a clip: `sim.tissue_injury`).
    """

    name: str
    shaft_length: float = 0.36
    shaft_radius: float = 2.5e-3
    jaw_length: float = 0.018
    jaw_width: float = 4.0e-3
    jaw_thickness: float = 1.2e-3
    jaw_curve: float = 0.0
    jaw_gap: float = 0.0
    jaw_open_max: float = 1.0
    jaw_max_torque: float = 0.1
    mass: float = 0.15
    view_angle: float = 0.0
    max_insert: float = 0.30
    grasps_tissue: bool = True

    @property
    def has_jaws(self) -> bool:
        return self.jaw_length > 0.0

    @property
    def min_insert(self) -> float:
        """Smallest insertion depth [m]: the jaws (or scope tip) stay 5 mm below the port."""
        return self.jaw_length + 0.005


# Catalogue. Sizes are those of common reusable 5 mm instruments (Storz/Aesculap class): working length
# 0.33-0.36 m, jaws 15-20 mm; the clip applier and scope are usually 10 mm, the scope 0.33 m long.
GRASPER = InstrumentSpec("atraumatic_grasper", jaw_length=0.018, jaw_width=4.5e-3, jaw_open_max=1.0)
MARYLAND = InstrumentSpec(
    "maryland_dissector", jaw_length=0.016, jaw_width=3.0e-3, jaw_curve=np.radians(25.0), jaw_open_max=0.9
)
SCISSORS = InstrumentSpec(
    "curved_scissors", jaw_length=0.015, jaw_width=2.5e-3, jaw_thickness=0.8e-3,
    jaw_curve=np.radians(20.0), jaw_open_max=0.8, jaw_max_torque=0.15, grasps_tissue=False,
)
CLIP_APPLIER = InstrumentSpec(
    "clip_applier", shaft_radius=5.0e-3, jaw_length=0.012, jaw_width=4.0e-3, jaw_thickness=1.5e-3,
    jaw_gap=1.5e-3, jaw_open_max=0.7, jaw_max_torque=0.3, mass=0.25, grasps_tissue=False,
)
SCOPE_0 = InstrumentSpec(
    "laparoscope_0deg", shaft_length=0.33, shaft_radius=5.0e-3, jaw_length=0.0, mass=0.3, max_insert=0.28
)
SCOPE_30 = InstrumentSpec(
    "laparoscope_30deg", shaft_length=0.33, shaft_radius=5.0e-3, jaw_length=0.0, mass=0.3,
    view_angle=np.radians(30.0), max_insert=0.28,
)
CATALOGUE = {s.name: s for s in (GRASPER, MARYLAND, SCISSORS, CLIP_APPLIER, SCOPE_0, SCOPE_30)}


def _f(x: float) -> str:
    return f"{float(x):.9g}"


def _inertial(mass: float, ixx: float, iyy: float, izz: float, z: float = 0.0) -> str:
    return (
        f'<inertial><origin xyz="0 0 {_f(z)}"/><mass value="{_f(mass)}"/>'
        f'<inertia ixx="{_f(ixx)}" iyy="{_f(iyy)}" izz="{_f(izz)}" ixy="0" ixz="0" iyz="0"/></inertial>'
    )


def _box(size: tuple[float, float, float], xyz: tuple[float, float, float], rpy=(0.0, 0.0, 0.0)) -> str:
    o = f'<origin xyz="{" ".join(map(_f, xyz))}" rpy="{" ".join(map(_f, rpy))}"/>'
    g = f'<geometry><box size="{" ".join(map(_f, size))}"/></geometry>'
    return f"<collision>{o}{g}</collision><visual>{o}{g}</visual>"


def _jaw_boxes(spec: InstrumentSpec, side: float) -> str:
    """Jaw geometry in the jaw link frame (origin at the hinge); side = +1 for jaw A (+y), -1 for B."""
    t, w, length = spec.jaw_thickness, spec.jaw_width, spec.jaw_length
    y = side * (spec.jaw_gap / 2 + t / 2)
    if spec.jaw_curve == 0.0:
        return _box((w, t, length), (0.0, y, -length / 2))
    l1, l2 = 0.6 * length, 0.4 * length
    c = spec.jaw_curve
    # The distal part bends toward +x; rpy (0, -c, 0) aligns its long axis with (sin c, 0, -cos c).
    centre = (np.sin(c) * l2 / 2, y, -l1 - np.cos(c) * l2 / 2)
    return _box((w, t, l1), (0.0, y, -l1 / 2)) + _box((w, t, l2), tuple(centre), (0.0, -c, 0.0))


def instrument_urdf(spec: InstrumentSpec, *, max_angle: float) -> str:
    """URDF text for a spec: fixed base at the port, joints a, b, insertion, roll, jaw A, jaw B.

    The scope gets the same chain with two massless, shapeless jaw links so joint indices match.
    max_angle [rad] bounds the gimbal joints (a safety net; targets are projected into the cone first).
    """
    r, length, jl = spec.shaft_radius, spec.shaft_length, spec.jaw_length
    m = spec.mass
    # Shaft as a solid cylinder about its centre; its inertia dominates the tip's effective mass.
    i_lat = m * (3 * r * r + length * length) / 12.0
    i_ax = 0.5 * m * r * r
    small = _inertial(1e-3, 1e-7, 1e-7, 1e-7)
    cyl = f'<geometry><cylinder radius="{_f(r)}" length="{_f(length)}"/></geometry>'
    shaft_origin = f'<origin xyz="0 0 {_f(jl + length / 2)}"/>'
    shaft = (
        f'<link name="shaft">{_inertial(m, i_lat, i_lat, i_ax, jl + length / 2)}'
        f"<collision>{shaft_origin}{cyl}</collision><visual>{shaft_origin}{cyl}</visual></link>"
    )
    jaw_mass = 2e-3 if spec.has_jaws else 1e-4
    jaw_i = jaw_mass * max(jl, 0.01) ** 2 / 3.0
    jaw_inertial = _inertial(jaw_mass, jaw_i, jaw_i, jaw_i * 0.1, -jl / 2)
    jaw_a = _jaw_boxes(spec, +1.0) if spec.has_jaws else ""
    jaw_b = _jaw_boxes(spec, -1.0) if spec.has_jaws else ""
    half_open = spec.jaw_open_max / 2 if spec.has_jaws else 0.0
    lim_a = _f(max_angle + 0.05)
    return f"""<?xml version="1.0"?>
<robot name="{spec.name}">
  <link name="port">{small}</link>
  <link name="gimbal_a">{small}</link>
  <link name="gimbal_b">{small}</link>
  <link name="insertion">{small}</link>
  {shaft}
  <link name="jaw_a">{jaw_inertial}{jaw_a}</link>
  <link name="jaw_b">{jaw_inertial}{jaw_b}</link>
  <joint name="a" type="revolute"><parent link="port"/><child link="gimbal_a"/>
    <axis xyz="1 0 0"/><limit lower="-{lim_a}" upper="{lim_a}" effort="100" velocity="100"/></joint>
  <joint name="b" type="revolute"><parent link="gimbal_a"/><child link="gimbal_b"/>
    <axis xyz="0 1 0"/><limit lower="-{lim_a}" upper="{lim_a}" effort="100" velocity="100"/></joint>
  <joint name="insert" type="prismatic"><parent link="gimbal_b"/><child link="insertion"/>
    <axis xyz="0 0 -1"/><limit lower="{_f(spec.min_insert)}" upper="{_f(spec.max_insert)}"
    effort="100" velocity="100"/></joint>
  <joint name="roll" type="continuous"><parent link="insertion"/><child link="shaft"/>
    <axis xyz="0 0 -1"/></joint>
  <joint name="jaw_a" type="revolute"><parent link="shaft"/><child link="jaw_a"/>
    <origin xyz="0 0 {_f(jl)}"/><axis xyz="1 0 0"/>
    <limit lower="-0.05" upper="{_f(half_open)}" effort="10" velocity="20"/></joint>
  <joint name="jaw_b" type="revolute"><parent link="shaft"/><child link="jaw_b"/>
    <origin xyz="0 0 {_f(jl)}"/><axis xyz="-1 0 0"/>
    <limit lower="-0.05" upper="{_f(half_open)}" effort="10" velocity="20"/></joint>
</robot>
"""


@dataclass
class ToolState:
    """Joint state of one instrument, read from PyBullet.

    q: (a [rad], b [rad], s [m], r [rad]); qd: their rates; jaw: total jaw opening [rad].
    """

    q: np.ndarray
    qd: np.ndarray
    jaw: float
    positions: list[float]  # all six joint positions, as PyBullet's dynamics calls want them


class Instrument:
    """One instrument loaded into a PyBullet client, its fixed base at the port's fulcrum.

    Args:
        client: PyBullet physics client id (DIRECT).
        spec: what instrument.
        port: where it enters.
        depth: initial insertion [m]; a, b, roll: initial angles [rad] (all zero = straight down).
    """

    def __init__(self, client: int, spec: InstrumentSpec, port: ports.Port, *, depth: float = 0.15,
                 a: float = 0.0, b: float = 0.0, roll: float = 0.0) -> None:
        self.client = client
        self.spec = spec
        self.port = port
        self.port_point = port.point()
        text = instrument_urdf(spec, max_angle=port.max_angle)
        fd, path = tempfile.mkstemp(suffix=".urdf", prefix=f"trocar_{spec.name}_")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self.body = pb.loadURDF(
                path, basePosition=list(port.position), useFixedBase=True,
                flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client,
            )
        finally:
            os.unlink(path)
        for j in range(pb.getNumJoints(self.body, physicsClientId=client)):
            # No hidden damping: the coupling is the only damper on the arm joints.
            pb.changeDynamics(self.body, j, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0,
                              lateralFriction=1.0, physicsClientId=client)
        pb.changeDynamics(self.body, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=client)
        for j, q in zip(ARM_JOINTS, (a, b, depth, roll), strict=True):
            pb.resetJointState(self.body, j, q, 0.0, physicsClientId=client)
        # Release PyBullet's default velocity motors so the arm joints are torque driven.
        pb.setJointMotorControlArray(self.body, list(ARM_JOINTS), pb.VELOCITY_CONTROL,
                                     forces=[0.0] * 4, physicsClientId=client)
        self.set_jaw(0.0)

    def set_jaw(self, opening: float) -> None:
        """Servo the jaws toward a total opening angle [rad] (clipped to [0, jaw_open_max])."""
        half = 0.5 * float(np.clip(opening, 0.0, self.spec.jaw_open_max)) if self.spec.has_jaws else 0.0
        torque = self.spec.jaw_max_torque if self.spec.has_jaws else 1.0
        pb.setJointMotorControlArray(
            self.body, [JOINT_JAW_A, JOINT_JAW_B], pb.POSITION_CONTROL, targetPositions=[half, half],
            forces=[torque, torque], positionGains=[0.3, 0.3], physicsClientId=self.client,
        )

    def read_state(self) -> ToolState:
        """Current joint state (see `ToolState`)."""
        js = pb.getJointStates(self.body, list(range(6)), physicsClientId=self.client)
        q = np.array([js[i][0] for i in ARM_JOINTS], dtype=np.float64)
        qd = np.array([js[i][1] for i in ARM_JOINTS], dtype=np.float64)
        return ToolState(q=q, qd=qd, jaw=float(js[JOINT_JAW_A][0] + js[JOINT_JAW_B][0]),
                         positions=[j[0] for j in js])

    def tip(self, state: ToolState | None = None) -> np.ndarray:
        """Tool-tip position [m], shape (3,), from the port kinematics."""
        st = state or self.read_state()
        return ports.tip_position(self.port_point, st.q[0], st.q[1], st.q[2])

    def shaft_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """PyBullet's own shaft-link pose: (tip position [m] (3,), unit shaft direction toward tip (3,))."""
        ls = pb.getLinkState(self.body, LINK_SHAFT, computeForwardKinematics=1, physicsClientId=self.client)
        rot = np.array(pb.getMatrixFromQuaternion(ls[5]), dtype=np.float64).reshape(3, 3)
        return np.array(ls[4], dtype=np.float64), -rot[:, 2]

    def mass_matrix(self, state: ToolState) -> np.ndarray:
        """Joint-space inertia of (a, b, s, r), shape (4, 4) [kg m^2, kg m, kg mixed by joint type]."""
        full = pb.calculateMassMatrix(self.body, state.positions, physicsClientId=self.client)
        return np.array(full, dtype=np.float64)[:4, :4]

    def gravity_torques(self, state: ToolState) -> np.ndarray:
        """Joint torques/forces holding the arm against gravity, shape (4,) for (a, b, s, r)."""
        tau = pb.calculateInverseDynamics(self.body, state.positions, [0.0] * 6, [0.0] * 6,
                                          physicsClientId=self.client)
        return np.array(tau[:4], dtype=np.float64)

    def apply_arm_torques(self, tau: np.ndarray) -> None:
        """Command torques/forces (4,) on (a, b, s, r) for the next step [N m, N m, N, N m]."""
        pb.setJointMotorControlArray(self.body, list(ARM_JOINTS), pb.TORQUE_CONTROL,
                                     forces=[float(t) for t in tau], physicsClientId=self.client)

    def link_ids(self) -> list[int]:
        """Links that carry collision shapes (shaft and jaws)."""
        return [LINK_SHAFT, JOINT_JAW_A, JOINT_JAW_B]


def read_link_poses(tools: list[Instrument], out: np.ndarray) -> np.ndarray:
    """World poses of each tool's shaft, jaw A and jaw B links into out (n_tools, 3, 7): position [m]
    and quaternion (x, y, z, w). The shaft link's origin is the tool tip (jaws closed), +z up the
    shaft. One PyBullet call per tool. Returns out."""
    for i, tool in enumerate(tools):
        states = pb.getLinkStates(tool.body, [LINK_SHAFT, JOINT_JAW_A, JOINT_JAW_B],
                                  computeForwardKinematics=1, physicsClientId=tool.client)
        for k, ls in enumerate(states):
            out[i, k, :3] = ls[4]
            out[i, k, 3:] = ls[5]
    return out
