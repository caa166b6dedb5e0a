"""`TrocarEnv`: a gymnasium environment over one trocar session (scene + procedure + action hands).

One environment owns one scene (its own PyBullet client, so several environments live in one
process) and advances it only through `sim.runtime.step.SessionStep`, at the scene's 1 kHz, with one
`ActionHand` per tool (research.envs.action). `reset(seed=...)` restores the scene in place
(`Scene.reset`: the same PyBullet world and tissue factorisation) and resets the procedure, so a
seed always gives the same episode; `last_reset_s` is what the last reset took [s].

Actions: float32 in [-1, 1], shape (n_tools * 5,), per tool (dx, dy, dz, droll, djaw): the change
of the tool's tip target over one control period is action * max speed * period, with
MAX_SPEED_M_S per axis, MAX_ROLL_RAD_S and MAX_JAW_RAD_S; targets stay inside the task's workspace,
the jaw in [0, jaw_open_max]. Within the period the targets move linearly, one step per tick.

Observations (obs_mode):
- 'state': float32 vector: per tool 15 values (tip position [m] (3), tip quaternion x y z w (4),
  target x y z [m] and roll [rad] (4), jaw command [rad] (1), coupling force on the tool [N] (3)),
  then the task's values (research.envs.tasks: `extra_labels`). `state_labels()` names them.
- 'rgb': the laparoscope's view, uint8 (H, W, 3) at image_size (default 128 x 128), EGL headless.
- 'rgbd': a dict {'rgb', 'depth' (H, W, 1) [m]}.
point_cloud=True turns any mode into a dict with 'state', the images of the mode and 'points'
(H, W, 3) world positions [m] (research.envs.camera).

Reward: the task's (research.envs.tasks); `terminated` when the procedure ends in success or
failure, `truncated` at the time limit (time_limit_s, default the procedure's cut-off) or the
procedure's own time-out. info: time_s, status, events (this step's scene events as dicts),
reward_terms, and at the end of an episode the procedure's result (`result`: the ProcedureResult
dict: score, metrics with units, errors) and `metrics` (name -> value).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from procedures.base import Trace
from research.envs.action import ActionHand
from research.envs.tasks import TASKS, Task
from sim.runtime.devices import WorkspaceMap
from sim.runtime.lockstep import numba_threads
from sim.runtime.step import Hand, SessionStep
from sim.scene import build_scene

MAX_SPEED_M_S = 0.05  # [m/s] per axis at |action| = 1
MAX_ROLL_RAD_S = 1.0  # [rad/s]
MAX_JAW_RAD_S = 3.0  # [rad/s]: the jaw opens fully (~0.6 rad) in 0.2 s
PER_TOOL = 15  # state values per tool
OBS_MODES = ("state", "rgb", "rgbd")


class TrocarEnv(gym.Env):
    """See the module docstring. task: an env id of research.envs.tasks.TASKS or a Task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str | Task = "trocar/PegTransfer-v0", *, obs_mode: str = "state",
                 image_size: tuple[int, int] = (128, 128), point_cloud: bool = False,
                 control_period_s: float = 0.1, time_limit_s: float | None = None,
                 tissue_tets: int | None = None, threads: int = 1,
                 render_mode: str | None = None) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {', '.join(OBS_MODES)}, not {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError("render_mode must be None or 'rgb_array'")
        self.task = TASKS[task]() if isinstance(task, str) else task
        self.obs_mode = obs_mode
        self.point_cloud = bool(point_cloud)
        self.render_mode = render_mode
        self.procedure = self.task.make_procedure()
        over = self.task.scene_overrides(self.procedure, 0, tissue_tets)
        self.scene = build_scene(self.procedure.scene_name, seed=0, **over)
        self.n_tools = self.scene.n_tools
        dt = self.scene.dt
        self.ticks_per_step = max(1, int(round(control_period_s / dt)))
        self.control_period_s = self.ticks_per_step * dt
        self.time_limit_s = float(time_limit_s or self.procedure.cutoff_s)
        self._limit_ticks = int(round(self.time_limit_s / dt))
        # the task's box, grown to hold the tools' start tips: a target never jumps at the start
        hold = self.scene.hold_control().targets[:, :3]
        lo, hi = self.task.workspace(self.scene)
        self.lo, self.hi = np.minimum(lo, hold.min(axis=0)), np.maximum(hi, hold.max(axis=0))
        self.threads = int(threads)
        self.jaw_max = np.array([t.spec.jaw_open_max for t in self.scene.tools])
        self._camera = None
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if obs_mode != "state" or point_cloud or render_mode == "rgb_array":
            from research.envs.camera import CameraObs

            self._camera = CameraObs(self.scene, self.image_size[1], self.image_size[0])
        self.action_space = spaces.Box(-1.0, 1.0, (self.n_tools * 5,), np.float32)
        self.observation_space = self._obs_space()
        cap = self._limit_ticks + self.ticks_per_step + 2
        self._trace = {"tool_pose": np.zeros((cap, self.n_tools, 7)), "jaws": np.zeros((cap, self.n_tools)),
                       "force": np.zeros((cap, self.n_tools, 3)), "scope_pose": np.zeros((cap, 7))}
        self._n = 0
        self.last_reset_s = 0.0
        self.episode_seed = 0
        self._step = None
        self._begin(0)

    # -- spaces --------------------------------------------------------------------------------------

    @property
    def state_dim(self) -> int:
        return self.n_tools * PER_TOOL + self.task.extra_dim

    def state_labels(self) -> list[str]:
        """What each value of the 'state' vector is (tool values, then the task's groups)."""
        per = ["tip x", "tip y", "tip z", "tip qx", "tip qy", "tip qz", "tip qw", "target x", "target y",
               "target z", "target roll", "jaw", "force x", "force y", "force z"]
        return [f"tool {i} {p}" for i in range(self.n_tools) for p in per] + list(self.task.extra_labels)

    def _obs_space(self):
        h, w = self.image_size
        state = spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)
        rgb = spaces.Box(0, 255, (h, w, 3), np.uint8)
        if self.obs_mode == "state" and not self.point_cloud:
            return state
        if self.obs_mode == "rgb" and not self.point_cloud:
            return rgb
        d = {"rgb": rgb}
        if self.obs_mode == "rgbd":
            d["depth"] = spaces.Box(0.0, np.inf, (h, w, 1), np.float32)
        if self.point_cloud:
            d["state"] = state
            d["points"] = spaces.Box(-np.inf, np.inf, (h, w, 3), np.float32)
        return spaces.Dict(d)

    # -- episode -------------------------------------------------------------------------------------

    def _begin(self, seed: int) -> None:
        scene = self.scene
        self.procedure.reset(scene, seed)
        hold = scene.hold_control()
        hands = []
        for i in range(self.n_tools):
            wmap = WorkspaceMap.for_scene(scene, tool=i, scale=1.0)
            hands.append(Hand(ActionHand(hold.targets[i], 0.0), wmap))
        self.hands = hands
        self._step = SessionStep(scene, hands, procedure=self.procedure, checksum_every=0)
        self._n = 0
        self._tick0 = scene.tick_count
        self.task.begin(scene, self.procedure)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        t0 = time.perf_counter()
        s = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self.episode_seed = s
        with numba_threads(self.threads):
            self.scene.reset(seed=s)
            self._begin(s)
        self.last_reset_s = time.perf_counter() - t0
        return self._observe(), {"time_s": 0.0, "status": self.procedure.status, "seed": s,
                                 "reset_s": self.last_reset_s}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=float).reshape(self.n_tools, 5), -1.0, 1.0)
        per = self.control_period_s
        start = np.array([h.device.target for h in self.hands])
        jaw0 = np.array([h.device.jaw for h in self.hands])
        goal = start.copy()
        goal[:, :3] = np.clip(start[:, :3] + a[:, :3] * MAX_SPEED_M_S * per, self.lo, self.hi)
        goal[:, 3] = start[:, 3] + a[:, 3] * MAX_ROLL_RAD_S * per
        jaw1 = np.clip(jaw0 + a[:, 4] * MAX_JAW_RAD_S * per, 0.0, self.jaw_max)
        scene, proc = self.scene, self.procedure
        n_events = len(scene.events)
        with numba_threads(self.threads):
            self._run(start, goal, jaw0, jaw1)
        tips = scene.tool_link_poses()[:, 0, :3]
        reward, terms = self.task.reward(scene, proc, tips)
        terminated = proc.status in ("success", "failure")
        truncated = not terminated and (proc.status == "timeout" or self._n >= self._limit_ticks)
        info = {"time_s": self._n * scene.dt, "status": proc.status, "reward_terms": terms,
                "events": [{"tick": e.tick, "kind": e.kind, "tool": e.tool, "value": e.value,
                            "message": e.message, "body": e.body} for e in scene.events[n_events:]]}
        if terminated or truncated:
            result = proc.result(self.trace())
            if result.status == "success":
                terms["score"] = result.score / 10.0
                reward += terms["score"]
            info["result"] = result.to_dict()
            info["metrics"] = {name: m.value for name, m in result.metrics.items()}
        return self._observe(), float(reward), terminated, truncated, info

    def _run(self, start, goal, jaw0, jaw1) -> None:
        """One control period: the targets move linearly from start to goal, one step per tick."""
        proc, step = self.procedure, self._step
        for k in range(1, self.ticks_per_step + 1):
            f = k / self.ticks_per_step
            for i, hand in enumerate(self.hands):
                hand.device.target[:] = start[i] + f * (goal[i] - start[i])
                hand.device.jaw = float(jaw0[i] + f * (jaw1[i] - jaw0[i]))
            step.step(0)
            self._record()
            if proc.done or self._n >= self._limit_ticks:
                break

    def _record(self) -> None:
        i, tr, scene = self._n, self._trace, self.scene
        if i >= len(tr["jaws"]):
            return
        scene.read_tool_poses(tr["tool_pose"][i])
        tr["jaws"][i] = self._step.control.jaws
        tr["force"][i] = self._step.force
        tr["scope_pose"][i] = scene.scope.pose
        self._n += 1

    def trace(self) -> Trace:
        """This episode so far as a procedures.base.Trace (what its metrics are computed from)."""
        n, tr = self._n, self._trace
        return Trace(dt=self.scene.dt, t=(np.arange(n) + 1) * self.scene.dt, tool_pose=tr["tool_pose"][:n],
                     jaws=tr["jaws"][:n], force=tr["force"][:n], scope_pose=tr["scope_pose"][:n],
                     events=[e for e in self.scene.events if e.tick >= self._tick0], tick0=self._tick0)

    # -- observations --------------------------------------------------------------------------------

    def state(self) -> np.ndarray:
        """The 'state' observation (see the module docstring), float32 (state_dim,)."""
        scene = self.scene
        poses = scene.tool_link_poses()[:, 0]
        coupling = self._step.coupling
        rows = [np.r_[poses[i], h.device.target, h.device.jaw, coupling[i]] for i, h in enumerate(self.hands)]
        return np.concatenate([*rows, self.task.extra_obs(scene, self.procedure)]).astype(np.float32)

    def _images(self) -> dict:
        return self._camera.observe(self._step.snapshot(), depth=self.obs_mode == "rgbd",
                                    points=self.point_cloud)

    def _observe(self):
        if self.obs_mode == "state" and not self.point_cloud:
            return self.state()
        img = self._images()
        if self.obs_mode == "rgb" and not self.point_cloud:
            return img["rgb"]
        if self.point_cloud:
            img["state"] = self.state()
        return img

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._camera.observe(self._step.snapshot())["rgb"]

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None
        if self.scene is not None:
            self.scene.close()
            self.scene = None
