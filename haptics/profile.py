"""Per-device calibration profiles: JSON files in the user's config dir, checked on load.

Owns where profiles live ($XDG_CONFIG_HOME/trocar/devices/SERIAL.json, default ~/.config/...),
their format (every fitted value with its residual, the date, the firmware and protocol versions,
a SHA-256 per field and one over the whole file), the checks on load (a corrupted, hand-edited
or mismatched profile raises ProfileError with one line naming the field), and CalibratedDevice:
a HapticDevice wrapper that loads the profile when the device connects and maps counts to
calibrated positions and forces to motor commands - or, with no valid profile, keeps the device
usable but uncalibrated with forces limited to UNCALIBRATED_MAX_FORCE.

Why a digest per field: a bare whole-file checksum says "something changed"; a lab tech who
edited one number should be told which one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from haptics import protocol as P
from haptics.calibration import counts_to_position, force_to_command, gravity_force
from haptics.device import DeviceEvent, DeviceSample, DeviceSpec, HapticDevice
from haptics.safety import SOFT_WAIT
from haptics.serial_device import SerialDevice

FORMAT = "trocar-device-profile"
FORMAT_VERSION = 1
UNCALIBRATED_MAX_FORCE = 1.0  # [N] force limit while a device has no valid profile
_VEC_FIELDS = {  # section -> fields that are 3-vectors of finite numbers
    "position": ("slope_counts_per_m", "offset_counts", "sign", "gain_error", "offset_mm",
                 "residual_mm", "max_residual_mm"),
    "workspace": ("min_counts", "max_counts", "offset_counts", "gain_error", "sign"),
    "force": ("gain", "residual_n"),
    "gravity": ("residual_n",),
}
N_GRAVITY = 10  # gravity model coefficients per axis (calibration.GRAVITY_FEATURES)


class ProfileError(ValueError):
    """A profile cannot be used. One line; names the file and the field."""


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/trocar/devices (default ~/.config/trocar/devices)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "trocar" / "devices"


def profile_path(serial: str) -> Path:
    """Where the profile of device `serial` lives (characters unsafe in file names -> '_')."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in serial) or "_"
    return config_dir() / f"{safe}.json"


def _canon(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _digests(body: dict) -> dict[str, str]:
    return {k: hashlib.sha256(_canon(v)).hexdigest()[:16] for k, v in _leaves(body).items()}


def _plain(x: object) -> object:
    """numpy -> JSON-able lists and floats."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def make_profile(info: P.Info, sections: dict) -> dict:
    """A profile body for device `info` with fitted `sections` (position, workspace, force,
    latency: each a dict of values), stamped with today's date (UTC)."""
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "serial": info.serial,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "protocol": list(info.protocol), "firmware": list(info.firmware),
            "counts_per_m": list(info.counts_per_m)}
    body.update(_plain(sections))
    return body


def save_profile(body: dict, path: Path | None = None) -> Path:
    """Write `body` with its digests and SHA-256 (atomically); returns the path."""
    body = {k: v for k, v in _plain(body).items() if k not in ("digests", "sha256")}
    doc = dict(body)
    doc["digests"] = _digests(body)
    doc["sha256"] = hashlib.sha256(_canon({"body": body, "digests": doc["digests"]})).hexdigest()
    path = Path(path) if path is not None else profile_path(body["serial"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _vec(doc: dict, section: str, name: str, where: str) -> None:
    v = doc[section].get(name) if isinstance(doc.get(section), dict) else None
    if (not isinstance(v, list) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                       for x in v)):
        raise ProfileError(f"{where}: field '{section}.{name}' must be 3 finite numbers, got {v!r}")


def check_profile(doc: object, where: str, *, info: P.Info | None = None) -> dict:
    """Validate a loaded profile document; returns it. ProfileError (one line) on any problem.

    Checks, in order: shape and format; every field's digest and the file's SHA-256 (hand edits
    and corruption); value ranges; and, given the device's INFO, that serial, protocol major and
    firmware match (someone else's calibration is never applied silently).
    """
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: not a profile (top level is not an object)")
    for key in ("format", "serial", "digests", "sha256"):
        if key not in doc:
            raise ProfileError(f"{where}: field '{key}' is missing")
    if doc["format"] != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise ProfileError(f"{where}: field 'format' is {doc['format']!r} version "
                           f"{doc.get('format_version')!r}, expected {FORMAT!r} {FORMAT_VERSION}")
    body = {k: v for k, v in doc.items() if k not in ("digests", "sha256")}
    stored = doc["digests"]
    if not isinstance(stored, dict):
        raise ProfileError(f"{where}: field 'digests' is not an object")
    actual = _digests(body)
    for name in sorted(set(actual) | set(stored)):
        if name not in actual:
            raise ProfileError(f"{where}: field '{name}' is missing (removed after calibration)")
        if stored.get(name) != actual[name]:
            what = "added" if name not in stored else "changed"
            raise ProfileError(f"{where}: field '{name}' was {what} after calibration (checksum "
                               f"mismatch); recalibrate with `trocar device calibrate`")
    if hashlib.sha256(_canon({"body": body, "digests": stored})).hexdigest() != doc["sha256"]:
        raise ProfileError(f"{where}: field 'sha256' does not match the file (corrupted or "
                           f"edited); recalibrate with `trocar device calibrate`")
    for section, names in _VEC_FIELDS.items():
        if section in doc:
            for name in names:
                _vec(doc, section, name, where)
    if "position" not in doc:
        raise ProfileError(f"{where}: field 'position' is missing (no encoder calibration)")
    pos = doc["position"]
    if any(abs(s) < 1e-9 for s in pos["slope_counts_per_m"]):
        raise ProfileError(f"{where}: field 'position.slope_counts_per_m' has a zero axis")
    if "force" in doc and not all(0.2 < g < 5.0 for g in doc["force"]["gain"]):
        raise ProfileError(f"{where}: field 'force.gain' out of range (0.2, 5): "
                           f"{doc['force']['gain']}")
    if "gravity" in doc:
        coef = doc["gravity"].get("coefficients") if isinstance(doc["gravity"], dict) else None
        if (not isinstance(coef, list) or len(coef) != 3
                or not all(isinstance(r, list) and len(r) == N_GRAVITY
                           and all(isinstance(x, (int, float)) and math.isfinite(x) for x in r)
                           for r in coef)):
            raise ProfileError(f"{where}: field 'gravity.coefficients' must be 3 rows of "
                               f"{N_GRAVITY} finite numbers")
        if abs(coef[0][0]) + abs(coef[1][0]) + abs(coef[2][0]) > 100.0:
            raise ProfileError(f"{where}: field 'gravity.coefficients' holds more than 100 N")
    if "stability" in doc:
        k = doc["stability"].get("max_stiffness_n_per_m") if isinstance(doc["stability"],
                                                                         dict) else None
        if not isinstance(k, (int, float)) or not math.isfinite(k) or not 0 < k < 1e6:
            raise ProfileError(f"{where}: field 'stability.max_stiffness_n_per_m' must be in "
                               f"(0, 1e6) N/m, got {k!r}")
    if info is not None:
        if doc["serial"] != info.serial:
            raise ProfileError(f"{where}: field 'serial' is {doc['serial']!r} but the connected "
                               f"device is {info.serial!r}; not using another device's calibration")
        proto = doc.get("protocol")
        if not isinstance(proto, list) or not proto or proto[0] != info.protocol[0]:
            raise ProfileError(f"{where}: field 'protocol' is {proto!r} but the device speaks "
                               f"{info.protocol[0]}.{info.protocol[1]}; recalibrate")
        if doc.get("firmware") != list(info.firmware):
            fw = ".".join(str(x) for x in info.firmware)
            raise ProfileError(f"{where}: field 'firmware' is {doc.get('firmware')!r} but the "
                               f"device runs {fw}; recalibrate after a firmware change")
    return doc


def load_profile(path: Path, *, info: P.Info | None = None) -> dict:
    """Read and check a profile file (see check_profile). ProfileError on any problem."""
    where = f"profile {path}"
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{where}: no profile for this device; run `trocar device calibrate`") \
            from None
    except OSError as exc:
        raise ProfileError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{where}: not UTF-8 text (byte {exc.start}): corrupted; recalibrate") \
            from None
    try:
        doc = json.loads(text)
    except RecursionError:
        # json's C parser recurses per nesting level; a profile is 3 levels deep.
        raise ProfileError(f"{where}: JSON nested too deeply to be a profile: corrupted; "
                           "recalibrate") from None
    except ValueError as exc:
        raise ProfileError(f"{where}: not valid JSON (line {getattr(exc, 'lineno', '?')}, column "
                           f"{getattr(exc, 'colno', '?')}): corrupted; recalibrate") from None
    return check_profile(doc, where, info=info)


def load_for_device(info: P.Info) -> dict:
    """The checked profile of the device that sent `info`. ProfileError if none is usable."""
    return load_profile(profile_path(info.serial), info=info)


class CalibratedDevice(HapticDevice):
    """A serial device seen through its stored calibration profile.

    On open() the profile for the device's serial is loaded and checked. With a valid profile,
    read() reports calibrated positions [m]; write_force(F) adds the gravity model's holding
    force at the newest position (the handle floats) and divides by the fitted force gains, so
    the handle feels F [N]; spec.max_stiffness is the measured max stable stiffness [N/m] (the
    stability step) when the profile has one. Without one (missing, corrupted, edited, another
    device's), the device stays usable uncalibrated: nominal counts_per_m positions and force
    limited to UNCALIBRATED_MAX_FORCE [N]; `profile_error` holds the one-line reason, also posted
    as a DeviceEvent.
    """

    def __init__(self, device: SerialDevice, *, required: bool = False) -> None:
        self.device = device
        self.required = required
        self.profile: dict | None = None
        self.profile_error: str | None = None
        self._slope = np.ones(3)
        self._offset = np.zeros(3)
        self._force_gain = np.ones(3)
        self._gravity: np.ndarray | None = None  # (3, 10) holding-force model [N]
        self._position = np.zeros(3)  # newest calibrated position [m]
        self._have_position = False
        self._spec: DeviceSpec | None = None

    @property
    def events(self):
        return self.device.events

    @property
    def spec(self) -> DeviceSpec:
        return self._spec if self._spec is not None else self.device.spec

    def open(self) -> None:
        self.device.open()
        info = self.device.info
        try:
            self.profile = load_for_device(info)
        except ProfileError as exc:
            self.profile = None
            self.profile_error = str(exc)
            if self.required:
                self.device.close()
                raise
        base = self.device.spec
        if self.profile is None:
            self._slope = np.asarray(info.counts_per_m, dtype=float)
            self._offset = np.zeros(3)
            self._force_gain = np.ones(3)
            fmax = min(base.max_force, UNCALIBRATED_MAX_FORCE)
            self.device.safety.max_force = fmax
            self.device.safety.start_threshold = 0.05 * fmax
            self.device.events.append(DeviceEvent(
                0.0, "uncalibrated", f"{self.profile_error}; running uncalibrated, force limited "
                f"to {fmax:g} N"))
        else:
            pos = self.profile["position"]
            self._slope = np.asarray(pos["slope_counts_per_m"], dtype=float)
            self._offset = np.asarray(pos["offset_counts"], dtype=float)
            if "force" in self.profile:
                self._force_gain = np.asarray(self.profile["force"]["gain"], dtype=float)
            if "gravity" in self.profile:
                self._gravity = np.asarray(self.profile["gravity"]["coefficients"], dtype=float)
            fmax = base.max_force
        kmax = base.max_stiffness
        if self.profile is not None and "stability" in self.profile:
            kmax = float(self.profile["stability"]["max_stiffness_n_per_m"])
        self._spec = DeviceSpec(**{**base.__dict__, "max_force": fmax, "max_stiffness": kmax})

    @property
    def calibrated(self) -> bool:
        return self.profile is not None

    def close(self) -> None:
        self.device.close()

    def read(self) -> DeviceSample:
        s = self.device.read()
        s.position = counts_to_position(s.position_counts, self._slope, self._offset)
        s.force_applied = s.force_applied * self._force_gain
        if s.fresh or s.seq:
            self._position = s.position
            self._have_position = True
        return s

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        f = np.asarray(force, dtype=float).reshape(3)
        if (self._gravity is not None and self._have_position
                and self.device.safety.phase != SOFT_WAIT):
            # (While the soft start waits for a small command it gets the simulation's own;
            # the ramp then brings the holding force in with everything else.)
            # The handle's weight is the device's business, not the simulation's.
            f = f + gravity_force(self._gravity, self._position)
        self.device.write_force(force_to_command(f, self._force_gain), gripper)

    def wait(self, timeout_s: float) -> None:
        self.device.wait(timeout_s)

    def link_stats(self) -> dict:
        """The driver's link health, with whether the profile was applied and why not."""
        stats = self.device.link_stats()
        stats["calibrated"] = self.calibrated
        if self.profile is not None:
            stats["calibration_note"] = f"profile {profile_path(self.device.info.serial)}"
        else:
            fmax = self.spec.max_force if self._spec is not None else UNCALIBRATED_MAX_FORCE
            stats["calibration_note"] = (f"{self.profile_error}; uncalibrated, force limited to "
                                         f"{fmax:g} N")
        return stats


def open_with_profile(device: HapticDevice) -> HapticDevice:
    """The device the runtime should use for `device`, opened.

    A SerialDevice (real hardware or an emulator) is wrapped in CalibratedDevice and opened: with
    a valid stored profile for its serial it is calibrated (positions, force gains, gravity
    compensation, max stiffness); without one it runs uncalibrated-but-safe (nominal counts per
    metre, force limited to UNCALIBRATED_MAX_FORCE [N]) and an "uncalibrated" DeviceEvent says
    why. Any other HapticDevice (null, replay, keyboard) has nothing to calibrate and is opened
    as it is. Raises DeviceError (one line) if the device cannot be opened at all.
    """
    if isinstance(device, SerialDevice):
        wrapped = CalibratedDevice(device)
        wrapped.open()
        return wrapped
    device.open()
    return device
