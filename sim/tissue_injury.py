"""What instruments do to tissue besides pushing and holding it: clips, damage and tearing, bleeding.

One stage of the scene's tick (`sim.scene.Scene.tick`), around the tissue step:
- `before_step` (after the contact stage has read the tools): a clip applier whose jaw command
  closes past CLIP_FIRE fires a clip on the tissue between its jaws (`sim.clips`); it re-arms (the
  next clip loads) when opened past CLIP_REARM. The clipped nodes are left out of tool contact from then on.
- `after_step` (after the contact projection): the clips follow their nodes; a grasper's bite
  pulled past its tear force tears out of the jaws (`sim.damage`: 'tear' event, the grasp ends);
  the damage field updates and separates failed elements (`sim.damage`), a
  'tear' event carries the pulling force at the tear [N] (the largest tissue force on a tool
  that tick); vessel failures open wounds, which bleed unless clipped on both sides
  (`sim.bleeding`).

Events (kind, tool, value, message): 'snip' (scissors blades closed past GRASP_CLOSE; value = the
widest jaw command since the last snip [rad]: what the blades swept), 'clip_applied' (value = clip
index), 'clip_missed' (-1: the jaws closed on nothing; -2: no clip left), 'tear' (value = force
[N]), 'bleed_start' / 'bleed_stop' (value = blood lost [mL]).

Snapshot rows (fixed sizes for the mailbox): `clips` (MAX_CLIPS, 8) and `blood` (1 + MAX_DROPS, 4).
"""

from __future__ import annotations

import numpy as np

from sim import clips as clp
from sim.bleeding import MAX_DROPS, Bleeding
from sim.damage import BITE_HOLD_TICKS, TEAR_GAP_S, TRANSIENT_SPEED, DamageField
from sim.tissue_elements import ELASTICITY_NEOHOOKEAN, elastic_stress
from sim.tissue_kernels import quat_to_mat
from sim.tissue_model import NO_FRAMES
from sim.tissue_solver import frame_drift
from sim.tool_scene import GRASP_CLOSE

SCISSORS_NAME = "curved_scissors"  # sim.instruments.SCISSORS


def is_scissors(spec) -> bool:
    """True for an instrument with blades: closing them is a snip ('snip' event)."""
    return spec.name == SCISSORS_NAME


def is_clip_applier(spec) -> bool:
    """True for an instrument that fires clips instead of grasping."""
    return spec.has_jaws and not spec.grasps_tissue and spec.jaw_gap > 0.0


class TissueInjury:
    """Clips, damage and bleeding of one tissue body (see the module docstring).

    Args: model, info (`sim.tissue_bodies.BodyInfo`), tools (the scene's instruments), dt [s],
    contact (`sim.contact.ToolTissueContact`: its tool frames and its `skip` mask are shared).
    """

    def __init__(self, model, info, tools, dt: float, contact) -> None:
        self.model, self.info, self.tools, self.dt, self.contact = model, info, tools, float(dt), contact
        self.clips = clp.ClipSet(model, info, dt, len(tools))
        self.damage = (DamageField(model, info.tear_stress, radius=info.damage_radius,
                                   bite_force=info.bite_tear_force)
                       if info.tear_stress is not None else None)
        self.bleeding = Bleeding(model, info, dt, self.clips) if info.vessel else None
        self.appliers = [i for i, t in enumerate(tools) if is_clip_applier(t.spec)]
        self.cutters = [i for i, t in enumerate(tools) if is_scissors(t.spec)]
        self.jaw_prev = np.zeros(len(tools))  # last jaw command [rad] (closed at the start: no snip)
        self.widest = np.zeros(len(tools))  # widest jaw command since the last snip [rad]
        self.tick = 0
        self.last_tear = -(10**9)
        self.tear = None  # a crack waiting for the scene to separate it (this tick only)
        self.bite_ticks = np.zeros(len(tools), dtype=np.int64)  # ticks each bite pulled past its tear force
        self._gripped_key = None  # the grasped nodes the damage field's `grip` was last given
        self._biting: tuple[int, ...] = ()  # the tools holding a bite, and their bites:
        self._bite_set: tuple = ()  # sim.damage.DamageField.bite_set; pull and tear pull [N]:
        self._pull, self._limit = np.zeros(0), np.zeros(0)
        self.refactor = None  # a model to refactor the step matrix for (a clip fired this tick)
        self.probe = np.zeros(0, dtype=np.int64)
        self._node_full = {name: getattr(info, name) for name in ("axial", "sector", "inner")
                           if getattr(info, name) is not None}
        self._events: list[tuple[str, int, float, str]] = []
        self._clip_rows = np.zeros((clp.MAX_CLIPS, 8))
        self._blood_rows = np.zeros((1 + MAX_DROPS, 4))

    # -- per tick ------------------------------------------------------------------------------------

    def before_step(self, state, jaws: np.ndarray) -> None:
        """Fire or re-arm clip appliers and report scissors snips from the jaw commands [rad]
        (n_tools,)."""
        for i in self.cutters:
            jaw = float(jaws[i])
            self.widest[i] = max(self.widest[i], jaw)
            if jaw < GRASP_CLOSE <= self.jaw_prev[i]:
                self._events.append(("snip", i, round(float(self.widest[i]), 6),
                                     f"tool {i} closed its blades (opened {self.widest[i]:.2f} rad)"))
                self.widest[i] = jaw
            self.jaw_prev[i] = jaw
        clips = self.clips
        for i in self.appliers:
            jaw = float(jaws[i])
            if clips.armed[i] and jaw < clp.CLIP_FIRE:
                clips.armed[i] = False
                self._fire(i, state)
            elif not clips.armed[i] and jaw > clp.CLIP_REARM:
                clips.armed[i] = True
        if clips.before_step():
            # The crimp has closed and the tissue settled into it: around the clip it is far from
            # rest, its elements turned up to ~75 deg against each other at the folds. Refactor
            # the step matrix assembled there (rotated element stiffnesses, node frames relative
            # to these).
            self.refactor = (self.model.with_topology(), clips.configuration(state))

    def _fire(self, i: int, state) -> None:
        tool = self.tools[i]
        free = ~self.contact.skip & (self.clips.inv_mass > 0.0)
        c = self.clips.fire(tool.spec, self.contact.frame_r[i], self.contact.frame_p[i],
                            tool.read_state().jaw, state.x, free)
        if c < 0:
            why = "the jaws closed on no tissue" if c == -1 else f"all {clp.MAX_CLIPS} clips are used"
            self._events.append(("clip_missed", i, float(c), f"clip lost: {why}"))
            return
        self.contact.skip[self.clips.node[c, :self.clips.count[c]]] = True
        if self.damage is not None:
            self.damage.hold(self.clips.elems[c, :self.clips.n_elems[c]])
        # The clip's tether is far stiffer than the tissue (the solver needs tens of passes a
        # tick until the preconditioner knows it): the scene refactors the step matrix with the
        # tethers off the hot path (`take_refactor`), assembled where the tissue is now (organs
        # hang far from their rest shape: `sim.organs.hanging`).
        self.refactor = (self.model.with_topology(), self.clips.configuration(state))
        r = self.clips.records()[c]
        where = ("" if np.isnan(r["along"]) else
                 f" at {r['along'] * 1e3:.1f} mm along the tube, {r['angle']:.0f} deg to its axis, "
                 f"{'across the whole width' if r['spans_width'] else 'NOT across the whole width'}")
        self._events.append(("clip_applied", i, float(c), f"clip {c} applied{where}"))

    def after_step(self, state, f_ext: np.ndarray, reaction: np.ndarray) -> None:
        """Clip poses, damage and tearing, bleeding (f_ext (n, 3) [N]: the carried contact
        forces, clip forces added; reaction (n_tools, 3) [N]: tissue force on each tool)."""
        self.tick += 1
        self.clips.after_step(state)
        if self.damage is not None and self.damage.bite_force is not None:
            self._bites(state, f_ext)
        if self.damage is not None:
            failed = self.damage.update(state)
            if failed.size:
                self._torn(failed, state, reaction)
        if self.bleeding is not None:
            self._events.extend(self.bleeding.step(state.x))

    def _bites(self, state, f_ext: np.ndarray) -> None:
        """Graspers' bites: their elements out of the continuum criterion while held; a bite whose
        pull (the jaws' force on its nodes, f_ext [N]) stays past its tear force for BITE_HOLD_TICKS
        ticks tears out: 'tear' event (value: that pull [N]), its elements torn, the grasp ends."""
        contact = self.contact
        att, tool = contact.att_node, contact.att_tool
        key = (att.tobytes(), tool.tobytes())
        if key != self._gripped_key:
            self._gripped_key = key
            self.damage.grip(att)
            # The holding tools and their bites (nodes, their live elements) until the grasps
            # change: finding the elements every tick cost ~0.1 ms, a tenth of the tick.
            self._biting = tuple(int(i) for i in np.unique(tool))
            self._bite_set = self.damage.bite_set([att[tool == i] for i in self._biting])
            self._pull = np.zeros(len(self._biting))
            self._limit = np.zeros(len(self._biting))
        for i in range(len(self.bite_ticks)):
            if i not in self._biting:
                self.bite_ticks[i] = 0
        if not self._biting:
            return
        self.damage.bite_pulls(self._bite_set, f_ext, self._pull, self._limit)
        transient = state.max_speed > TRANSIENT_SPEED
        for b, i in enumerate(self._biting):
            pull, limit = float(self._pull[b]), float(self._limit[b])
            if transient or not pull > limit:
                self.bite_ticks[i] = 0
                continue
            self.bite_ticks[i] += 1
            if self.bite_ticks[i] < BITE_HOLD_TICKS:
                continue
            nodes = att[tool == i]
            torn = self.damage.tear_bite(nodes)
            self.bite_ticks[i] = 0
            self.last_tear = self.tick
            msg = (f"the tissue in tool {i}'s jaws tore at {pull:.2f} N (tears at {limit:.2f} N): "
                   "it tore out of the jaws")
            contact.release(i, "release", 0.0, f"the tissue tore out of tool {i}'s jaws")
            self._events.append(("tear", i, round(pull, 6), msg))
            if self.bleeding is not None and torn.size:
                self.bleeding.open_wound(torn, state.x)

    def set_probe(self, nodes) -> None:
        """Measure the pulling force at a tear on these (clamped) nodes instead of the tools: the
        tissue's elastic force on them [N] (a scripted pull by moving clamped nodes, as a tensile
        tester does)."""
        self.probe = np.asarray(nodes, dtype=np.int64).copy()

    def pull_force(self, state, reaction: np.ndarray) -> tuple[float, int]:
        """(force [N], tool index or -1) pulling on the tissue now: the probe's elastic force if a
        probe is set, else the largest tissue force on a tool."""
        if self.probe.size:
            return float(np.linalg.norm(probe_force(self.model, state, self.probe))), -1
        if not len(reaction):
            return 0.0, -1
        mags = np.linalg.norm(reaction, axis=1)
        return float(mags.max()), int(np.argmax(mags))

    def _torn(self, failed: np.ndarray, state, reaction: np.ndarray) -> None:
        """Elements failed: the crack through them waits in `tear` for the scene to separate
        (`take_tear`); the 'tear' event (first failure of a tear) goes with it."""
        event = None
        if self.tick - self.last_tear > TEAR_GAP_S / self.dt:
            force, tool = self.pull_force(state, reaction)
            event = ("tear", tool, round(force, 6),
                     f"the {self.info.name} tore at {force:.2f} N (tears at "
                     f"{self.info.tear_force:.2f} N)")
        self.last_tear = self.tick
        self.tear = (self.damage.crack_blade(state.x, failed), failed.copy(), event)
        if self.bleeding is not None:
            self.bleeding.open_wound(failed, state.x)

    def tethers(self) -> tuple:
        """The clips' tethers for the tissue step (`sim.tissue.step`)."""
        return self.clips.tethers()

    def take_refactor(self):
        """(model, configuration or None): a model (the tissue with a new clip's tether springs)
        whose step matrix the scene factors off the hot path (at rest, or at the configuration:
        `sim.tissue_model.TissueSystem.build`) and swaps in `clp.CLIP_REFACTOR_TICKS` later; or None."""
        model, self.refactor = self.refactor, None
        return model

    def configuration(self, state) -> tuple:
        """The tissue's configuration now for a step matrix assembled there (`TissueSystem.build`'s
        `at`, with the clips' tethers: `sim.clips.ClipSet.configuration`)."""
        return self.clips.configuration(state)

    def drift(self, state, system, limit: float, out: np.ndarray) -> int:
        """How many free nodes' frames (with the clips') have turned more than `limit` (as
        sin^2(theta / 2)) from those `system` (a `sim.tissue_model.TissueSystem`) was assembled at;
        out: a (>= n, 4) scratch buffer."""
        frames = self.clips.frames_into(state, out)
        return frame_drift(frames, system.fpos, NO_FRAMES if system.frames is None else system.frames,
                           limit)

    def take_tear(self):
        """(blade, failed elements, event or None) of a tear this tick, or None; the scene cuts
        along the blade (`sim.scene.Scene.tick`), or calls `tear_not_separated`."""
        tear, self.tear = self.tear, None
        return tear

    def tear_not_separated(self, failed: np.ndarray, event, state) -> None:
        """The crack separated no face: the failed elements soften instead (and the step after
        re-evaluates every element); the event is recorded as it is."""
        self.damage.soften(failed)
        state.carried = False
        if event is not None:
            self._events.append(event)

    def retopologize(self, model, node_source: np.ndarray | None = None) -> None:
        """The tissue has a new model (a cut or a restored state; node ids only ever appended,
        element ids stable): per-node body arrays grow by their sources, every stage rebinds."""
        self.model = model
        self._gripped_key = None  # a bite's elements may have been split: find them again
        info = self.info
        n = model.node_count
        for name in ("axial", "sector", "inner"):
            full = self._node_full.get(name)
            if full is None:
                continue
            if len(full) < n:
                src = node_source if node_source is not None else np.arange(n)
                full = self._node_full[name] = np.concatenate([full, full[src[len(full):n]]])
            setattr(info, name, full[:n])
        self.clips.retopologize(model)
        if self.damage is not None:
            self.damage.retopologize(model)
        if self.bleeding is not None:
            self.bleeding.model = model

    def on_topology(self, change) -> None:
        """Scene topology listener: rebind to the new model; a cut through a vessel opens a wound
        (the live elements around the separated faces)."""
        self.retopologize(change.model, change.node_source)
        if self.bleeding is not None and len(change.faces):
            nodes = np.zeros(change.model.node_count, dtype=bool)
            nodes[change.faces.reshape(-1)] = True
            elems = np.flatnonzero(nodes[change.model.tets].any(axis=1) & (change.model.volume > 0))
            self.opened(np.r_[elems, change.killed], change.state)

    def opened(self, elements: np.ndarray, state) -> None:
        """Elements were cut or torn open (a wound there if the body is a vessel): the cutting
        stage calls this with the elements its blade went through; tearing does it itself."""
        if self.bleeding is not None and len(elements):
            self.bleeding.open_wound(np.asarray(elements, dtype=np.int64), state.x)

    def after_reset(self) -> None:
        """After the tissue was reset to rest (a blow-up): clipped nodes stay out of contact."""
        self.contact.skip[self.clips.clipped_nodes()] = True

    def drain_events(self) -> list[tuple[str, int, float, str]]:
        out, self._events = self._events, []
        return out

    # -- reading -------------------------------------------------------------------------------------

    def snapshot_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(clips (MAX_CLIPS, 8), blood (1 + MAX_DROPS, 4)) copies for the snapshot."""
        self.clips.poses(self._clip_rows)
        if self.bleeding is not None:
            self.bleeding.rows(self._blood_rows)
        return self._clip_rows.copy(), self._blood_rows.copy()

    def summary(self) -> dict:
        """Clip records, damage metrics, blood lost [mL] (for procedures and reports)."""
        out = {"clips": self.clips.records(), "blood_ml": self.bleeding.volume if self.bleeding else 0.0,
               "bleeding": bool(self.bleeding and self.bleeding.rate > 0.0)}
        if self.damage is not None:
            out.update(self.damage.summary())
        return out

    # -- state ---------------------------------------------------------------------------------------

    def get_state(self) -> dict:
        return {"tick": self.tick, "last_tear": self.last_tear, "jaw_prev": self.jaw_prev.copy(),
                "bite_ticks": self.bite_ticks.copy(),
                "widest": self.widest.copy(), "clips": self.clips.get_state(),
                "damage": self.damage.get_state() if self.damage else None,
                "bleeding": self.bleeding.get_state() if self.bleeding else None}

    def set_state(self, saved: dict) -> None:
        self.tick, self.last_tear = saved["tick"], saved["last_tear"]
        self.jaw_prev[:] = saved["jaw_prev"]
        self.bite_ticks[:] = saved["bite_ticks"]
        self._gripped_key = None  # the damage field's grip comes back with its state
        self.widest[:] = saved["widest"]
        self.clips.set_state(saved["clips"])
        if self.damage is not None:
            self.damage.set_state(saved["damage"])
        if self.bleeding is not None:
            self.bleeding.set_state(saved["bleeding"])
        self._events = []

    def hash_into(self, h) -> None:
        h.update(np.int64(self.tick).tobytes())
        h.update(np.int64(self.last_tear).tobytes())
        h.update(self.jaw_prev.tobytes())
        h.update(self.bite_ticks.tobytes())
        h.update(self.widest.tobytes())
        self.clips.hash_into(h)
        if self.damage is not None:
            self.damage.hash_into(h)
        if self.bleeding is not None:
            self.bleeding.hash_into(h)


def probe_force(model, state, nodes: np.ndarray) -> np.ndarray:
    """Sum of the elastic element forces on `nodes` [N], (3,), at the state's positions: each
    incident element's -V P Dm^-T from its deformation gradient and rotation after the last step
    (`TissueState.fs`, `q`), without the damping of the next step's predictor (what a tensile
    tester's load cell reads once the pull is slow)."""
    total = np.zeros(3)
    neo = model.elasticity == ELASTICITY_NEOHOOKEAN
    for i in nodes:
        for k in range(int(model.node_ptr[i]), int(model.node_ptr[i + 1])):
            code = int(model.node_inc[k])
            e, corner = code >> 2, code & 3
            if model.volume[e] <= 0.0:
                continue
            r = quat_to_mat(*state.q[:, e])
            p = np.array(elastic_stress(neo, *state.fs[:, e], r, model.mu[e], model.lam[e])[:9])
            d = model.dm_inv_rows[:, e].reshape(3, 3)  # row a: row a of Dm^-1
            f = -model.volume[e] * (p.reshape(3, 3) @ d.T)  # column a: corner a + 1
            total += -f.sum(axis=1) if corner == 0 else f[:, corner - 1]
    return total
