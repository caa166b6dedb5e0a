"""The OpenXR action set: VR controllers as instruments, and their vibration as force feedback.

Runs in the headset's display process (inside the Monado root, or wherever the OpenXR runtime is):
it has only pyopenxr and NumPy, and talks to the servo through the session's input mailbox
(`sim.runtime.keyboard.input_layout`, xr_* fields); the servo turns that into device samples
(`sim.runtime.xr_device`). Actions, each with subaction paths /user/hand/left (hand 0, tool 0)
and /user/hand/right (hand 1, tool 1):

| action | type | bound to |
|---|---|---|
| `grip_pose` | pose | .../input/grip/pose |
| `jaw` | float | the trigger (.../trigger/value; select/click on the simple controller) |
| `recentre` | boolean | menu/click (the rest pose becomes the controller's current one) |
| `force` | vibration | .../output/haptic |
| `explore_zoom` | float | thumbstick (trackpad) y: the explorer's scale, up = bigger |
| `explore_cut` | float | thumbstick (trackpad) x: the explorer's clipping plane, right = deeper |
| `explore_layer` | boolean | thumbstick (trackpad) click: the next layer hidden / shown |

Suggested bindings for khr/simple_controller, microsoft/motion_controller (Monado's simulated
`wmr` controllers), oculus/touch_controller, valve/index_controller and htc/vive_controller.

Haptics: each frame, hand h's controller vibrates with amplitude |F_h| / `FORCE_FULL` (clipped to
[0, 1]; |F_h| the force envelope of tool h [N], the snapshot's force_env: the coupling force a
haptic device would render, held with a 0.1 s decay so that a brief contact between two frames is
still felt) for the minimal duration, so the vibration follows the force at frame rate; below
`HAPTIC_MIN` it is stopped.
"""

from __future__ import annotations

import numpy as np

from sim.render.hud import FORCE_FULL  # |F| giving full vibration amplitude [N]: the HUD's full bar

HAPTIC_MIN = 0.02  # amplitudes below this stop the vibration
HANDS = ("/user/hand/left", "/user/hand/right")
_STICK = {"explore_zoom": "input/thumbstick/y", "explore_cut": "input/thumbstick/x",
          "explore_layer": "input/thumbstick/click"}
PROFILES = {
    "/interaction_profiles/khr/simple_controller": {
        "grip_pose": "input/grip/pose", "jaw": "input/select/click", "recentre": "input/menu/click",
        "force": "output/haptic"},
    "/interaction_profiles/microsoft/motion_controller": {
        "grip_pose": "input/grip/pose", "jaw": "input/trigger/value", "recentre": "input/menu/click",
        "force": "output/haptic", **_STICK},
    "/interaction_profiles/oculus/touch_controller": {
        "grip_pose": "input/grip/pose", "jaw": "input/trigger/value", "force": "output/haptic", **_STICK},
    "/interaction_profiles/valve/index_controller": {
        "grip_pose": "input/grip/pose", "jaw": "input/trigger/value", "recentre": "input/a/click",
        "force": "output/haptic", **_STICK},
    "/interaction_profiles/htc/vive_controller": {
        "grip_pose": "input/grip/pose", "jaw": "input/trigger/value", "recentre": "input/menu/click",
        "force": "output/haptic", "explore_zoom": "input/trackpad/y", "explore_cut": "input/trackpad/x",
        "explore_layer": "input/trackpad/click"},
}
STICK_DEAD = 0.2  # thumbstick dead zone
ZOOM_RATE = 1.0  # full stick: scale x e per second
CUT_RATE = 0.02  # full stick: clipping plane [m of scene] per second


class XrControllers:
    """Creates the action set on an instance, attaches it to a session, then per frame: sync, read
    poses / trigger / recentre into the input mailbox, vibrate with the tools' force.

    box: the session's input mailbox (writer side for the xr_* fields), or None (poses are still
    read and reported). Counters for the report: frames, frames with each hand tracked, haptic
    pulses sent per hand, the largest amplitude sent per hand, the last poses."""

    def __init__(self, box=None) -> None:
        self.box = box
        self.data = box.empty() if box is not None else None
        self.tracked_frames = [0, 0]
        self.haptic_pulses = [0, 0]
        self.haptic_max = [0.0, 0.0]
        self.last_pose = [[0.0] * 7, [0.0] * 7]
        self.last_trigger = [0.0, 0.0]
        self.bound_profiles: list[str] = []
        self._vibrating = [False, False]

    def create(self, xr, instance) -> None:
        """Action set, actions and suggested bindings (before the session's action sets attach)."""
        self.xr = xr
        self.instance = instance
        self.hand_paths = [xr.string_to_path(instance, p) for p in HANDS]
        self.action_set = xr.create_action_set(instance, xr.ActionSetCreateInfo(
            action_set_name="trocar_instruments", localized_action_set_name="Trocar instruments",
            priority=0))
        kinds = {"grip_pose": xr.ActionType.POSE_INPUT, "jaw": xr.ActionType.FLOAT_INPUT,
                 "recentre": xr.ActionType.BOOLEAN_INPUT, "force": xr.ActionType.VIBRATION_OUTPUT,
                 "explore_zoom": xr.ActionType.FLOAT_INPUT, "explore_cut": xr.ActionType.FLOAT_INPUT,
                 "explore_layer": xr.ActionType.BOOLEAN_INPUT}
        names = {"grip_pose": "Instrument pose", "jaw": "Close the jaws", "recentre": "Recentre",
                 "force": "Instrument force", "explore_zoom": "Explorer scale",
                 "explore_cut": "Explorer cut", "explore_layer": "Explorer layers"}
        self.actions = {name: xr.create_action(self.action_set, xr.ActionCreateInfo(
            action_type=kind, action_name=name, localized_action_name=names[name],
            subaction_paths=self.hand_paths)) for name, kind in kinds.items()}
        for profile, paths in PROFILES.items():
            bindings = [xr.ActionSuggestedBinding(self.actions[name],
                                                  xr.string_to_path(instance, f"{hand}/{p}"))
                        for hand in HANDS for name, p in paths.items()]
            try:
                xr.suggest_interaction_profile_bindings(instance, xr.InteractionProfileSuggestedBinding(
                    interaction_profile=xr.string_to_path(instance, profile), suggested_bindings=bindings))
                self.bound_profiles.append(profile.rsplit("/", 2)[-2] + "/" + profile.rsplit("/", 1)[-1])
            except Exception:  # noqa: BLE001 - a runtime may not know every profile
                pass

    def attach(self, session, space) -> None:
        """Pose spaces per hand and xrAttachSessionActionSets (once, after xrCreateSession)."""
        xr = self.xr
        self.session = session
        self.space = space
        self.hand_spaces = [xr.create_action_space(session, xr.ActionSpaceCreateInfo(
            action=self.actions["grip_pose"], subaction_path=p)) for p in self.hand_paths]
        xr.attach_session_action_sets(session, xr.SessionActionSetsAttachInfo(action_sets=[self.action_set]))
        self._sync_info = xr.ActionsSyncInfo(active_action_sets=[
            xr.ActiveActionSet(action_set=self.action_set, subaction_path=xr.NULL_PATH)])

    def update(self, display_time, snap: dict | None, focused: bool) -> None:
        """One frame: read both controllers (when FOCUSED: actions sync only then), publish them to
        the servo, and vibrate each with its tool's force."""
        xr = self.xr
        valid = [False, False]
        if focused:
            try:
                xr.sync_actions(self.session, self._sync_info)
            except xr.SessionNotFocused:  # a success code: the session is leaving FOCUSED
                focused = False
        if focused:
            for h, (path, space) in enumerate(zip(self.hand_paths, self.hand_spaces, strict=True)):
                loc = xr.locate_space(space, self.space, display_time)
                flags = int(loc.location_flags)
                ok = bool(flags & xr.SPACE_LOCATION_POSITION_VALID_BIT) and bool(
                    flags & xr.SPACE_LOCATION_ORIENTATION_VALID_BIT)
                p, o = loc.pose.position, loc.pose.orientation
                pose = [p.x, p.y, p.z, o.x, o.y, o.z, o.w]
                trig = xr.get_action_state_float(self.session, xr.ActionStateGetInfo(
                    action=self.actions["jaw"], subaction_path=path))
                rec = xr.get_action_state_boolean(self.session, xr.ActionStateGetInfo(
                    action=self.actions["recentre"], subaction_path=path))
                trigger = float(trig.current_state) if trig.is_active else 0.0
                valid[h] = ok
                if ok:
                    self.tracked_frames[h] += 1
                    self.last_pose[h] = pose
                self.last_trigger[h] = trigger
                if self.data is not None:
                    self.data["xr_pose"][h] = pose
                    self.data["xr_trigger"][h] = trigger
                    if rec.is_active and rec.changed_since_last_sync and rec.current_state:
                        self.data["xr_recenter"][h] += 1
            self._haptics(snap)
        if self.data is not None:
            self.data["xr_valid"][:] = valid
            self.box.write(self.data)

    def explore(self, explorer, dt: float) -> None:
        """The explorer's controls from the thumbsticks (after `update` synced the actions, while
        FOCUSED): y scales, x moves the clipping plane (turning it on), a click cycles the next
        layer hidden."""
        from sim.render.explorer import LAYER_KEYS, MAX_SCALE, MIN_SCALE

        for path in self.hand_paths:
            zoom, cut = self._state("explore_zoom", path), self._state("explore_cut", path)
            layer = self._state("explore_layer", path, boolean=True)
            if zoom.is_active and abs(zoom.current_state) > STICK_DEAD:
                explorer.scale = float(np.clip(explorer.scale * np.exp(ZOOM_RATE * dt * zoom.current_state),
                                               MIN_SCALE, MAX_SCALE))
            if cut.is_active and abs(cut.current_state) > STICK_DEAD:
                explorer.clip = True
                explorer.clip_offset -= CUT_RATE * dt * cut.current_state
            if layer.is_active and layer.changed_since_last_sync and layer.current_state:
                layers = list(LAYER_KEYS.values())
                self.layer_turn = (getattr(self, "layer_turn", -1) + 1) % (len(layers) + 1)
                explorer.hidden = {"walls"} | ({layers[self.layer_turn]} if self.layer_turn < len(layers)
                                                else set())

    def _state(self, name: str, path, *, boolean: bool = False):
        xr = self.xr
        get = xr.get_action_state_boolean if boolean else xr.get_action_state_float
        return get(self.session, xr.ActionStateGetInfo(action=self.actions[name], subaction_path=path))

    def _haptics(self, snap: dict | None) -> None:
        xr = self.xr
        if snap is None:
            return
        if "force_env" in snap:
            force = np.asarray(snap["force_env"], float).ravel()
        else:
            force = np.linalg.norm(np.asarray(snap["tool_force"]).reshape(-1, 3), axis=1)
        for h, path in enumerate(self.hand_paths):
            if h >= len(force):
                break
            amp = float(min(max(force[h] / FORCE_FULL, 0.0), 1.0))
            info = xr.HapticActionInfo(action=self.actions["force"], subaction_path=path)
            if amp >= HAPTIC_MIN:
                vib = xr.HapticVibration(amplitude=amp, duration=xr.MIN_HAPTIC_DURATION,
                                         frequency=xr.FREQUENCY_UNSPECIFIED)
                xr.apply_haptic_feedback(self.session, info, vib)
                self._vibrating[h] = True
                self.haptic_pulses[h] += 1
                self.haptic_max[h] = max(self.haptic_max[h], amp)
            elif self._vibrating[h]:
                xr.stop_haptic_feedback(self.session, info)
                self._vibrating[h] = False

    def report(self) -> dict:
        return {"profiles": self.bound_profiles, "tracked_frames": self.tracked_frames,
                "haptic_pulses": self.haptic_pulses, "haptic_max": [round(a, 4) for a in self.haptic_max],
                "last_pose": [[round(v, 5) for v in p] for p in self.last_pose],
                "last_trigger": self.last_trigger}

    def destroy(self) -> None:
        xr = self.xr
        for space in getattr(self, "hand_spaces", []):
            xr.destroy_space(space)
        if getattr(self, "action_set", None) is not None:
            xr.destroy_action_set(self.action_set)
            self.action_set = None
