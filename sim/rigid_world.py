"""The rigid world in PyBullet DIRECT: box-trainer floor, FLS-style peg-transfer board, rings, clips.

Owns the creation of the physics client (`make_client`) and of the rigid bodies the instruments
collide with. Bodies are built from parameters with `createMultiBody` and compound collision shapes
(no mesh files). Units: m, kg, s; world z up, origin at the centre of the box-trainer floor.

FLS peg transfer geometry used here (see docs/instruments.md). As in the FLS manual, the board carries
12 pegs, six per side (left group = pegs 0-5, right group = pegs 6-11, each a 2 x 3 grid), and six
rubber triangular "rings" that start one per left peg. Sizes are approximations of the FLS-compatible
boards on the market (the FLS manual does not publish a drawing): board 0.18 x 0.10 x 0.010 m, pegs
4 mm diameter, 25 mm tall, 30 mm apart (a ring's outer edge clears its neighbour by 8 mm), rings
approximated as flat tori of centreline radius 9.5 mm and tube radius 1.5 mm (hole 16 mm across),
2 g each, built from 8 capsule segments (a compound of convex shapes, so Bullet can move it dynamically;
8 rather than 12 segments because compound-vs-compound collision dominates the step: 12 cost ~200 us
more per tick with six rings resting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet as pb


def make_client(dt: float = 1e-3) -> int:
    """A new PyBullet DIRECT client with gravity, fixed step dt [s] and deterministic pair ordering."""
    cid = pb.connect(pb.DIRECT)
    pb.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
    pb.setPhysicsEngineParameter(fixedTimeStep=dt, numSubSteps=0, numSolverIterations=50,
                                 deterministicOverlappingPairs=1, physicsClientId=cid)
    return cid


def add_floor(client: int, *, half_extent: float = 0.25) -> int:
    """Box-trainer floor: a static slab whose top face is z = 0; returns the body id."""
    shape = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=[half_extent, half_extent, 0.01],
                                    physicsClientId=client)
    body = pb.createMultiBody(0.0, shape, basePosition=[0.0, 0.0, -0.01], physicsClientId=client)
    pb.changeDynamics(body, -1, lateralFriction=0.8, physicsClientId=client)
    return body


@dataclass(frozen=True)
class PegboardSpec:
    """Peg-transfer board.

    Attributes:
        centre: board centre on the floor (x, y) [m].
        size: board (length x, width y, thickness z) [m].
        peg_xy: peg positions relative to the board centre [m], shape (n, 2).
        peg_radius, peg_height: [m] (height above the board top).
        ring_radius: ring centreline radius [m]; ring_tube: tube radius [m]; ring_mass [kg].
        ring_pegs: for each ring, the peg it starts on (rings on the same peg stack).
    Pegs with x < centre x are the left side, the others the right side (`side_of`).
    """

    centre: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float, float] = (0.18, 0.10, 0.010)
    peg_xy: tuple[tuple[float, float], ...] = tuple(
        (side * x, y) for side in (-1.0, 1.0) for x in (0.065, 0.035) for y in (-0.03, 0.0, 0.03))
    peg_radius: float = 2.0e-3
    peg_height: float = 0.025
    ring_radius: float = 9.5e-3
    ring_tube: float = 1.5e-3
    ring_mass: float = 2.0e-3
    ring_pegs: tuple[int, ...] = (0, 1, 2, 3, 4, 5)

    @property
    def top(self) -> float:
        """Board top height [m]."""
        return self.size[2]

    @property
    def hole_clearance(self) -> float:
        """Largest distance [m] of a ring centre from a peg axis with the peg still inside the hole:
        the 8-segment ring's hole is narrowest at the segment middles, R cos(pi/8) - tube."""
        return self.ring_radius * float(np.cos(np.pi / 8)) - self.ring_tube - self.peg_radius

    def side_of(self, i: int) -> int:
        """0 for a left-side peg, 1 for a right-side peg."""
        return int(self.peg_xy[i][0] > 0.0)

    def peg_world(self, i: int) -> np.ndarray:
        """Peg i axis point on the board top [m], shape (3,)."""
        x, y = self.peg_xy[i]
        return np.array([self.centre[0] + x, self.centre[1] + y, self.top])


@dataclass
class Pegboard:
    """Body ids of a built board: the static board+pegs body and one body per ring."""

    spec: PegboardSpec
    board: int
    rings: list[int] = field(default_factory=list)


def add_pegboard(client: int, spec: PegboardSpec | None = None) -> Pegboard:
    """Build the board (one static compound body: slab + pegs) and the rings resting on their pegs."""
    spec = spec or PegboardSpec()
    sx, sy, sz = spec.size
    n = len(spec.peg_xy)
    types = [pb.GEOM_BOX] + [pb.GEOM_CYLINDER] * n
    half = [[sx / 2, sy / 2, sz / 2]] + [[0.0, 0.0, 0.0]] * n
    radii = [0.0] + [spec.peg_radius] * n
    lengths = [0.0] + [spec.peg_height] * n
    frames = [[0.0, 0.0, sz / 2]] + [[x, y, sz + spec.peg_height / 2] for x, y in spec.peg_xy]
    shape = pb.createCollisionShapeArray(types, radii=radii, halfExtents=half, lengths=lengths,
                                         collisionFramePositions=frames, physicsClientId=client)
    board = pb.createMultiBody(0.0, shape, basePosition=[spec.centre[0], spec.centre[1], 0.0],
                               physicsClientId=client)
    pb.changeDynamics(board, -1, lateralFriction=0.6, physicsClientId=client)
    result = Pegboard(spec=spec, board=board)
    height = {}
    for peg in spec.ring_pegs:
        level = height.get(peg, 0)
        height[peg] = level + 1
        c = spec.peg_world(peg)
        c[2] += spec.ring_tube * (2 * level + 1) + 1e-4
        result.rings.append(add_ring(client, c, radius=spec.ring_radius, tube=spec.ring_tube,
                                     mass=spec.ring_mass))
    return result


def add_ring(client: int, centre: np.ndarray, *, radius: float = 9.5e-3, tube: float = 1.5e-3,
             mass: float = 2.0e-3, segments: int = 8) -> int:
    """A flat ring (torus of centreline radius and tube radius [m]) made of capsule segments.

    centre: ring centre [m] (3,); the ring lies in the horizontal plane. Returns the body id.
    """
    types, radii, lengths, frames, orns = [], [], [], [], []
    chord = 2 * radius * np.sin(np.pi / segments)
    for k in range(segments):
        phi = 2 * np.pi * (k + 0.5) / segments
        types.append(pb.GEOM_CAPSULE)
        radii.append(tube)
        lengths.append(chord)
        frames.append([radius * np.cos(phi) * np.cos(np.pi / segments),
                       radius * np.sin(phi) * np.cos(np.pi / segments), 0.0])
        # Capsules lie along their local z; turn z onto the tangent (-sin phi, cos phi, 0).
        orns.append(pb.getQuaternionFromEuler([np.pi / 2, 0.0, phi]))
    shape = pb.createCollisionShapeArray(types, radii=radii, lengths=lengths, collisionFramePositions=frames,
                                         collisionFrameOrientations=orns, physicsClientId=client)
    i_plane = 0.5 * mass * radius**2
    body = pb.createMultiBody(mass, shape, basePosition=list(map(float, centre)), physicsClientId=client)
    pb.changeDynamics(body, -1, lateralFriction=0.8, localInertiaDiagonal=[i_plane, i_plane, 2 * i_plane],
                      linearDamping=0.0, angularDamping=0.0, physicsClientId=client)
    return body


def add_clip(client: int, position: np.ndarray, orientation=(0.0, 0.0, 0.0, 1.0), *,
             leg_length: float = 9e-3, spread: float = 0.3, wire: float = 0.5e-3,
             mass: float = 2e-4) -> int:
    """A released ligation clip: a rigid V of two thin boxes meeting at the apex (titanium, ~9 mm).

    position: apex [m] (3,); orientation: quaternion (x, y, z, w); spread: angle between the legs
    [rad] (0 = closed). Returns the body id. (Closing a clip on tissue is the tissue engineer's part.)
    """
    types, half, frames, orns = [], [], [], []
    for side in (+1.0, -1.0):
        ang = side * spread / 2
        types.append(pb.GEOM_BOX)
        half.append([wire, wire, leg_length / 2])
        frames.append([0.0, np.sin(ang) * leg_length / 2, np.cos(ang) * leg_length / 2])
        orns.append(pb.getQuaternionFromEuler([-ang, 0.0, 0.0]))
    shape = pb.createCollisionShapeArray(types, halfExtents=half, collisionFramePositions=frames,
                                         collisionFrameOrientations=orns, physicsClientId=client)
    return pb.createMultiBody(mass, shape, basePosition=list(map(float, position)),
                              baseOrientation=list(orientation), physicsClientId=client)
