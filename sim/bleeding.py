"""Bleeding: an opened vessel that is not sealed on both sides loses blood, and the trainee sees it.

A wound opens where vessel elements fail (a tear, `sim.damage`) or are cut (`open_wound`); it is
followed through a tissue node near it and has a rest axial coordinate s_w along the vessel. Each
side of the wound is sealed when a clip that spans the vessel's width and has finished its crimp
sits on that side (`sim.clips`: along < s_w on the low side, > s_w on the high side). Each open
side bleeds at the vessel's `bleed_rate` [mL/s] (our choice: the same for both ends; a divided
artery's distal end back-bleeds through collaterals); a wound sealed on both sides does not bleed.

Events: 'bleed_start' when the total rate rises from 0, 'bleed_stop' when it falls to 0 (value:
blood lost so far [mL]). What the trainee sees (`rows`): drops that leave the wound every DROP_ML
of blood and fall under gravity to the floor, where they gather in a pool whose radius grows with
the volume (a film POOL_FILM thick). The snapshot carries them as (1 + MAX_DROPS, 4) rows
(x, y, z [m], radius [m]; row 0 is the pool; radius 0 = empty).
"""

from __future__ import annotations

import numpy as np

from sim.scene_state import copy_attrs, hash_attrs, restore_attrs

MAX_WOUNDS = 8
MAX_DROPS = 48
DROP_ML = 0.05  # [mL] blood per visible drop
POOL_FILM = 1.0e-3  # [m] pool thickness
MERGE_M = 3.0e-3  # [m] a failure this close (along the vessel) to a wound widens it
GRAVITY = -9.81  # [m/s^2]
FLOOR_Z = 0.0  # [m] where drops land (the trainer floor)


class Bleeding:
    """Wounds, blood lost and the visible blood of one vessel body (see the module docstring).

    Args: model (the tissue), info (`BodyInfo`, vessel with axial coordinates), dt [s],
    clips (`sim.clips.ClipSet` of the same body).
    State: wounds (n_wounds, wound_node, wound_s), volume [mL], rate [mL/s], drops and pool.
    """

    def __init__(self, model, info, dt: float, clips) -> None:
        self.model, self.info, self.dt, self.clips = model, info, float(dt), clips
        self.n_wounds = 0
        self.wound_node = np.zeros(MAX_WOUNDS, dtype=np.int64)
        self.wound_s = np.zeros(MAX_WOUNDS)
        self.volume = 0.0
        self.rate = 0.0
        self.pending = 0.0  # [mL] lost since the last drop
        self.drops = np.zeros((MAX_DROPS, 4))
        self.drop_v = np.zeros(MAX_DROPS)  # vertical speed [m/s]; 0 once landed
        self.falling = np.zeros(MAX_DROPS, dtype=np.bool_)
        self.next_drop = 0
        self.pool = np.zeros(4)
        self.pooled = 0.0  # [mL] in the pool

    def open_wound(self, elements: np.ndarray, x: np.ndarray) -> bool:
        """Vessel elements were torn or cut: open a wound there (or widen the nearest one).
        Returns True if a new wound opened."""
        info = self.info
        if not info.vessel or len(elements) == 0:
            return False
        mask = info.vessel_elements  # a body with one vessel among other organs
        if mask is not None:
            elements = np.asarray(elements)[mask[np.asarray(elements)]]
            if len(elements) == 0:
                return False
        nodes = np.unique(self.model.tets[elements])
        s = float(info.axial[nodes].mean())
        if self.n_wounds and np.min(np.abs(self.wound_s[:self.n_wounds] - s)) < MERGE_M:
            return False
        if self.n_wounds >= MAX_WOUNDS:
            return False
        centre = x[nodes].mean(axis=0)
        near = nodes[int(np.argmin(np.linalg.norm(x[nodes] - centre, axis=1)))]
        self.wound_node[self.n_wounds] = near
        self.wound_s[self.n_wounds] = s
        self.n_wounds += 1
        return True

    def sealed(self, s: float) -> tuple[bool, bool]:
        """(low side sealed, high side sealed) for a wound at axial coordinate s [m]."""
        c = self.clips
        n = c.n_clips
        ok = c.spans[:n] & (c.crimp[:n] >= 1.0)
        return bool(np.any(ok & (c.along[:n] < s))), bool(np.any(ok & (c.along[:n] > s)))

    def step(self, x: np.ndarray) -> list[tuple[str, int, float, str]]:
        """One tick: the rate from the wounds and clips, blood lost, drops; returns the events."""
        events = []
        rate = 0.0
        for w in range(self.n_wounds):
            lo, hi = self.sealed(float(self.wound_s[w]))
            rate += (0.0 if lo else self.info.bleed_rate) + (0.0 if hi else self.info.bleed_rate)
        if rate > 0.0 and self.rate == 0.0:
            events.append(("bleed_start", -1, round(self.volume, 6),
                           f"the vessel is bleeding ({rate:.2f} mL/s): clip it on both sides"))
        elif rate == 0.0 and self.rate > 0.0:
            events.append(("bleed_stop", -1, round(self.volume, 6),
                           f"bleeding stopped after {self.volume:.2f} mL"))
        self.rate = rate
        lost = rate * self.dt
        self.volume += lost
        self.pending += lost
        if self.pending >= DROP_ML and self.n_wounds:
            self.pending -= DROP_ML
            self._spawn(x)
        if self.falling.any():
            self._fall()
        return events

    def _spawn(self, x: np.ndarray) -> None:
        w = self.next_drop % self.n_wounds  # wounds take turns
        i = self.next_drop % MAX_DROPS
        self.next_drop += 1
        self.drops[i, :3] = x[self.wound_node[w]]
        self.drops[i, 3] = (3.0 * DROP_ML * 1e-6 / (4.0 * np.pi)) ** (1.0 / 3.0)
        self.drop_v[i] = 0.0
        self.falling[i] = True

    def _fall(self) -> None:
        f = self.falling
        self.drop_v[f] += GRAVITY * self.dt
        self.drops[f, 2] += self.drop_v[f] * self.dt
        landed = f & (self.drops[:, 2] - self.drops[:, 3] <= FLOOR_Z)
        for i in np.flatnonzero(landed):
            if self.pooled == 0.0:
                self.pool[:2] = self.drops[i, :2]
                self.pool[2] = FLOOR_Z
            self.pooled += DROP_ML
            self.pool[3] = np.sqrt(self.pooled * 1e-6 / (np.pi * POOL_FILM))
            self.falling[i] = False
            self.drops[i] = 0.0

    def rows(self, out: np.ndarray) -> np.ndarray:
        """Visible blood into out (1 + MAX_DROPS, 4): pool, then drops (x, y, z, radius [m])."""
        out[0] = self.pool
        out[1:] = self.drops
        return out

    _NOT_STATE = frozenset({"model", "info", "dt", "clips"})

    def get_state(self) -> dict:
        return copy_attrs(self, self._NOT_STATE)

    def set_state(self, saved: dict) -> None:
        restore_attrs(self, saved)

    def hash_into(self, h) -> None:
        hash_attrs(h, self, self._NOT_STATE)
