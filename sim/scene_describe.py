"""A scene's static description for renderers (`describe`, `sim.scene.Scene.describe`): the tools,
scope, peg board, rigid bodies, tissue start surface and organ meshes, as picklable plain data a
display process reads once. The per-tick arrays are `sim.scene.Scene.snapshot`'s.
"""

from __future__ import annotations

import numpy as np

from sim import clips as clp
from sim import scene_topology as topo
from sim.anatomy import BODY_COLOURS, RIGID_COLOURS, Anatomy


def describe(scene, caps: tuple[int, int]) -> dict:
    """Static description of `scene` (a `sim.scene.Scene`; caps: its snapshot capacities, nodes and
    surface triangles) for renderers (picklable plain data, fixed for the scene's life).

    Keys: name; snapshot_version (`sim.scene_topology.SNAPSHOT_VERSION`); tissue_max_nodes,
    tissue_max_triangles (snapshot capacities); dt [s]; tissue_rest (n, 3) [m] and
    tissue_triangles (k, 3) int32 (outward surface at the start, see snapshot's tissue_tris for
    the live one; empty without tissue); tools: list of dicts (name, port (3,) [m],
    shaft_length, shaft_radius, jaw_length, jaw_width, jaw_thickness, jaw_curve [rad], jaw_gap,
    jaw_open_max [rad]) in control order; scope: dict(port (3,), view_angle [rad], params (6,):
    the scope's start pose, `sim.camera.PARAMS` order); floor_half_extent [m] (floor top at z =
    0); trainer_top [m]; pegboard: None or dict(centre (2,), size (3,), pegs (k, 3) peg base
    centres on the board top [m], peg_radius, peg_height); bodies: one dict per snapshot
    `bodies` row: kind 'ring' (radius, tube) or 'clip'; (version 3 snapshots also carry `clips`
    and `blood`, fixed sizes); clip_size (3,) [m]: a closed clip's box (across the jaw plane,
    closing direction, along the jaws); tissue_body: the tissue body's name.
    Organ scenes add: tissue_node_body (n,) int32 (organ label of each start node),
    tissue_body_colours (B, 3) (linear RGB per organ label), rigid_meshes: list of dicts
    (name, points (p, 3) [m], triangles (t, 3) int32, colour (3,)) for the rigid organs.
    """
    pegboard = None
    if scene.rigid.pegboard is not None:
        spec = scene.rigid.pegboard.spec
        pegboard = {"centre": np.array(spec.centre), "size": np.array(spec.size),
                    "pegs": np.array([spec.peg_world(i) for i in range(len(spec.peg_xy))]),
                    "peg_radius": spec.peg_radius, "peg_height": spec.peg_height}
    rings = set(scene.rigid.pegboard.rings) if scene.rigid.pegboard is not None else set()
    bodies = [{"kind": "ring", "radius": scene.rigid.pegboard.spec.ring_radius,
               "tube": scene.rigid.pegboard.spec.ring_tube} if b in rings else {"kind": "clip"}
              for b in scene.rigid.graspable]
    tools = []
    for tool in scene.tools:
        s = tool.spec
        tools.append({"name": s.name, "port": tool.port_point.copy(), "shaft_length": s.shaft_length,
                      "shaft_radius": s.shaft_radius, "jaw_length": s.jaw_length,
                      "jaw_width": s.jaw_width, "jaw_thickness": s.jaw_thickness,
                      "jaw_curve": s.jaw_curve, "jaw_gap": s.jaw_gap, "jaw_open_max": s.jaw_open_max})
    out = {
        "name": scene.config.name,
        "snapshot_version": topo.SNAPSHOT_VERSION,
        "tissue_max_nodes": caps[0],
        "tissue_max_triangles": caps[1],
        "dt": scene.dt,
        "tissue_rest": scene.tissue.rest.copy() if scene.tissue else np.zeros((0, 3)),
        "tissue_triangles": (scene.tissue.surface.astype(np.int32) if scene.tissue
                             else np.zeros((0, 3), np.int32)),
        "tools": tools,
        "scope": {"port": scene.config.scope_port.point(), "view_angle": scene.scope.view_angle,
                  "params": scene.scope.params()},
        "floor_half_extent": 0.25,
        "trainer_top": 0.25,
        "pegboard": pegboard,
        "bodies": bodies,
        "clip_size": np.array([clp.CLIP_WIDTH, 1.0e-3, 0.009]),
        "tissue_body": scene.body_info.name if scene.body_info is not None else None,
    }
    if scene.anatomy is not None:
        out.update(organ_description(scene.anatomy))
    return out


def organ_description(anatomy: Anatomy) -> dict:
    """describe()'s organ keys (see there) of an organ scene's `anatomy`."""
    rigid = [{"name": name, "points": pts.copy(), "triangles": tri.astype(np.int32),
              "colour": np.array(RIGID_COLOURS[name])}
             for name, (pts, tri) in anatomy.rigid.items()]
    return {"tissue_node_body": anatomy.node_body.astype(np.int32),
            "tissue_body_colours": BODY_COLOURS.copy(),
            "rigid_meshes": rigid}
