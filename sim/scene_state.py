"""Scene state helpers: the captured state, and generic copy/restore/hash of a layer's arrays.

`Scene.get_state/set_state/reset/checksum` use these, and each layer saves what it owns:
- `ToolScene` (sim.tool_scene): PyBullet through `pb.saveState`/`pb.restoreState` in its own client
  (tool joints, rigid body poses and velocities, contact warm starts), plus what saveState does not
  hold, redone by hand: grasp constraints (re-created with their saved frames), the tool-object
  collision filters turned off while grasping, the jaw servo targets; and its arrays (coupling
  targets and previous targets, joint caches, jaw commands, last forces).
- `ToolTissueContact` (sim.contact): capsules of the previous tick, face multipliers, carried node
  and face forces, the tool reaction and its point, grasp attachments, contact masks, last jaws.
- the tissue (`TissueState`: positions, velocities, element rotations, counters);
- the scene itself: tick count, the reaction on the tools, the contact forces carried into the next
  step, the grasped-object memory, the events list length, the scope, the RNG.
Arrays are taken generically (every ndarray attribute of a layer object), so a field added to one
of these classes is saved, restored and hashed without touching this module.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields

import numpy as np
import pybullet as pb

from sim.tissue import TissueState

#: TissueState arrays recomputed from scratch in every step before being read: not hashed.
TISSUE_SCRATCH = frozenset(TissueState.SCRATCH)


@dataclass
class SceneState:
    """A captured scene state (opaque to callers; `Scene.get_state`). It holds a PyBullet in-memory
    state: `release()` frees it (the scene's own start state is kept for `reset`).

    rigid: the ToolScene's state (with the saveState id); contact, tissue: the contact layer's and
    the tissue's copies (None without tissue); scene: the scene's own fields.
    """

    rigid: dict
    contact: dict | None
    tissue: dict | None
    scene: dict
    released: bool = field(default=False)

    def release(self) -> None:
        """Free the PyBullet state (idempotent; a no-op once the client is gone)."""
        if not self.released:
            self.released = True
            try:
                pb.removeState(self.rigid["bullet"], physicsClientId=self.rigid["client"])
            except pb.error:
                pass


def copy_attrs(obj, skip: frozenset = frozenset()) -> dict:
    """Copies of obj's ndarray attributes and plain values (lists, numbers, None), except `skip`."""
    out = {}
    for k, v in vars(obj).items():
        if k in skip:
            continue
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif isinstance(v, (list, tuple, int, float, bool)) or v is None:
            out[k] = copy.deepcopy(v)
    return out


def restore_attrs(obj, saved: dict) -> None:
    """Write `copy_attrs` output back: arrays of the same shape in place (kernels and views keep
    pointing at the same buffers), anything else as a copy."""
    for k, v in saved.items():
        cur = getattr(obj, k, None)
        if (isinstance(v, np.ndarray) and isinstance(cur, np.ndarray) and cur.shape == v.shape
                and cur.dtype == v.dtype):
            cur[...] = v
        elif isinstance(v, np.ndarray):
            setattr(obj, k, v.copy())
        else:
            setattr(obj, k, copy.deepcopy(v))


def hash_attrs(h, obj, skip: frozenset = frozenset()) -> None:
    """Feed what `copy_attrs(obj, skip)` would copy into a hashlib object, in name order (no copies)."""
    attrs = vars(obj)
    for k in sorted(attrs):
        v = attrs[k]
        if k in skip:
            continue
        if isinstance(v, np.ndarray):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).data)
        elif isinstance(v, (list, tuple, int, float, bool)) or v is None:
            h.update(k.encode())
            h.update(json.dumps(v, default=str).encode())


def tissue_state_dict(state) -> dict:
    """Copies of every field of a `TissueState` (a dataclass)."""
    return {f.name: (getattr(state, f.name).copy() if isinstance(getattr(state, f.name), np.ndarray)
                     else getattr(state, f.name)) for f in fields(state)}


def hash_tissue_state(h, state) -> None:
    """Hash a TissueState's fields except the per-step scratch (`TISSUE_SCRATCH`)."""
    for f in fields(state):
        if f.name in TISSUE_SCRATCH:
            continue
        v = getattr(state, f.name)
        h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
