"""Scripted instrument motion for frames without a device (`trocar render`, tests, benchmarks).

Each tool moves from where it starts to hover just above its side of the work area (the tissue
top, the pegboard, or the floor), then circles there with its jaws opening and closing, so
consecutive frames differ. Deterministic: a function of simulated time only.
"""

from __future__ import annotations

import numpy as np

from sim.scene import Scene, SceneControl

APPROACH_S = 0.6  #: time to reach the hover point [s]


class ToolScript:
    """Targets for `Scene.tick` as a function of simulated time."""

    def __init__(self, scene: Scene):
        d = scene.describe()
        self.start = np.array([t.tip() for t in scene.tools]).reshape(-1, 3)
        rest = np.asarray(d["tissue_rest"]).reshape(-1, 3)
        if len(rest):
            lo, hi = rest.min(axis=0), rest.max(axis=0)
            centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
            half = 0.25 * (hi[0] - lo[0])
        elif d.get("pegboard") is not None:
            pb = d["pegboard"]
            centre = np.array([pb["centre"][0], pb["centre"][1], pb["size"][2] + pb["peg_height"]])
            half = 0.25 * pb["size"][0]
        else:
            centre, half = np.zeros(3), 0.03
        n = len(self.start)
        offsets = np.linspace(-half, half, n) if n > 1 else np.zeros(1)
        self.hover = np.c_[centre[0] + offsets, np.full(n, centre[1]), np.full(n, centre[2] + 0.015)]
        self.open_max = np.array([t.spec.jaw_open_max if t.spec.has_jaws else 0.0 for t in scene.tools])

    def control(self, t: float) -> SceneControl:
        """The control at simulated time t [s]."""
        n = len(self.start)
        if t < APPROACH_S:
            w = 0.5 - 0.5 * np.cos(np.pi * t / APPROACH_S)
            tip = self.start + w * (self.hover - self.start)
            jaws = np.zeros(n)
        else:
            phase = 2 * np.pi * (t - APPROACH_S) + np.arange(n) * np.pi
            ramp = min(1.0, (t - APPROACH_S) / 0.3)
            circle = 0.01 * ramp * np.c_[np.sin(phase), 1 - np.cos(phase), np.zeros(n)]
            tip = self.hover + circle
            jaws = 0.7 * self.open_max * ramp * (0.5 - 0.5 * np.cos(phase))
        return SceneControl(np.c_[tip, np.zeros(n)], jaws)


class ScriptHand:
    """A hand that plays the tool script through the device path (`--device script`): before each
    tick it looks where its tool should be (observe) and reports the device position that puts it
    there (`WorkspaceMap.inverse`), like a scripted policy. No force output."""

    def __init__(self) -> None:
        from haptics.device import DeviceSample, DeviceSpec

        self.spec = DeviceSpec(name="script")
        self.sample = DeviceSample(connected=True, fresh=True)
        self.script: ToolScript | None = None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def observe(self, scene: Scene, wmap) -> None:
        if self.script is None:
            self.script = ToolScript(scene)
        ctl = self.script.control(scene.tick_count * scene.dt)
        self.sample.position = wmap.inverse(ctl.targets[wmap.tool, :3])
        self.sample.gripper = float(ctl.jaws[wmap.tool])
        self.sample.seq += 1

    def read(self):
        return self.sample

    def write_force(self, force, gripper: float = 0.0) -> None:
        pass

    def zero(self) -> None:
        pass


def scripted_session(scene: Scene):
    """A session step for the scene with no hands (the script drives every tool)."""
    from sim.runtime.step import SessionStep

    return SessionStep(scene, [], checksum_every=0)


def run_until(step, script: ToolScript, t_end: float) -> None:
    """Advance the session step (`sim.runtime.step.SessionStep`) under the script until its scene's
    simulated time reaches t_end [s]."""
    scene = step.scene
    while scene.tick_count * scene.dt < t_end - 1e-12:
        step.step(0, control=script.control(scene.tick_count * scene.dt))
