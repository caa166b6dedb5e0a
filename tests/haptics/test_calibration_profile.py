"""Stored calibration profiles: round trip, and refusal of corrupted, edited or foreign ones."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from haptics import protocol as P
from haptics.emulated_device import EmulatedDevice
from haptics.profile import (
    UNCALIBRATED_MAX_FORCE,
    CalibratedDevice,
    ProfileError,
    load_profile,
    make_profile,
    profile_path,
    save_profile,
)


def _info(serial="EMU-0001", firmware=(1, 0, 0), protocol=(1, 0)) -> P.Info:
    return P.Info(protocol, firmware, serial, (1e5, 1e5, 1e5), 2000.0, 5.0, 2.0, 2000.0,
                  (0.08, 0.08, 0.08), 50, 1000)


def _sections(offset=(1234.0, -567.0, 89.0), slope=(1.03e5, -0.98e5, 1.01e5)):
    position = {"slope_counts_per_m": list(slope), "offset_counts": list(offset),
                "sign": [1.0, -1.0, 1.0], "gain_error": [0.03, -0.02, 0.01],
                "offset_mm": [12.34, -5.67, 0.89], "residual_mm": [0.0, 0.0, 0.0],
                "max_residual_mm": [0.0, 0.0, 0.0], "points": 9}
    force = {"gain": [1.0, 1.0, 1.0], "residual_n": [0.0, 0.0, 0.0],
             "reference_stiffness_n_per_m": 200.0, "push_n": 3.0}
    return {"position": position, "force": force, "latency": {"one_way_ms": 1.0}}


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_profile_round_trips_in_the_xdg_config_dir(tmp_path):
    path = save_profile(make_profile(_info(), _sections()))
    assert path == tmp_path / "config" / "trocar" / "devices" / "EMU-0001.json"
    doc = load_profile(path, info=_info())
    assert doc["position"]["offset_counts"] == [1234.0, -567.0, 89.0]
    assert doc["serial"] == "EMU-0001" and doc["firmware"] == [1, 0, 0] and doc["created"]
    assert len(doc["sha256"]) == 64


def test_hand_edited_value_is_rejected_naming_the_field():
    path = save_profile(make_profile(_info(), _sections()))
    doc = json.loads(path.read_text())
    doc["position"]["offset_counts"][0] = 1000.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"field 'position.offset_counts' was changed") as e:
        load_profile(path, info=_info())
    assert "\n" not in str(e.value)


def test_corrupted_file_is_rejected_in_one_line():
    path = save_profile(make_profile(_info(), _sections()))
    path.write_text(path.read_text()[:200])
    with pytest.raises(ProfileError, match="not valid JSON") as e:
        load_profile(path, info=_info())
    assert "\n" not in str(e.value)


def test_edited_checksum_is_rejected_naming_the_field():
    path = save_profile(make_profile(_info(), _sections()))
    doc = json.loads(path.read_text())
    doc["sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="field 'sha256'"):
        load_profile(path, info=_info())


def test_another_devices_profile_is_not_applied():
    path = save_profile(make_profile(_info("EMU-A"), _sections()))
    with pytest.raises(ProfileError, match="field 'serial' is 'EMU-A' but the connected device is "
                                           "'EMU-B'"):
        load_profile(path, info=_info("EMU-B"))


def test_profile_from_other_firmware_is_rejected_naming_the_field():
    path = save_profile(make_profile(_info(), _sections()))
    with pytest.raises(ProfileError, match="field 'firmware'"):
        load_profile(path, info=_info(firmware=(1, 1, 0)))


def test_missing_profile_says_how_to_make_one():
    with pytest.raises(ProfileError, match="trocar device calibrate"):
        load_profile(profile_path("NOPE"), info=_info("NOPE"))


def test_device_with_a_corrupted_profile_runs_uncalibrated_with_forces_limited(tmp_path):
    save_profile(make_profile(_info("EMU-C"), _sections()))
    path = profile_path("EMU-C")
    path.write_text(path.read_text().replace("1234.0", "1200.0"))
    inner = EmulatedDevice("--serial", "EMU-C", "--hand", "still", "--hand-at", "0.01,0,0",
                           state_timeout_s=0.2, ramp_s=0.05)
    dev = CalibratedDevice(inner)
    try:
        dev.open()
        assert not dev.calibrated and "field 'position.offset_counts'" in dev.profile_error
        assert dev.spec.max_force == UNCALIBRATED_MAX_FORCE
        assert any(e.kind == "uncalibrated" for e in dev.events)
        peak = 0.0
        t0 = time.monotonic()
        while time.monotonic() < t0 + 1.5:
            s = dev.read()
            peak = max(peak, float(np.linalg.norm(s.force_applied)))
            # zero first: the soft start waits for a small command, then the sim asks for 4 N
            dev.write_force((4.0, 0.0, 0.0) if time.monotonic() > t0 + 0.3 else (0.0, 0.0, 0.0))
            dev.wait(0.002)
        assert s.connected and 0.5 < peak <= UNCALIBRATED_MAX_FORCE + 1e-3
        assert abs(s.position[0] - 0.01) < 1e-4  # nominal counts per metre, no offset applied
        st = dev.link_stats()  # what the runtime reports and records
        assert st["calibrated"] is False
        assert "position.offset_counts" in st["calibration_note"]
        assert "uncalibrated, force limited to 1 N" in st["calibration_note"]
    finally:
        dev.close()


@pytest.mark.parametrize("content,why", [
    (b'{"format": "trocar-device-profile", "serial": "\xff\xfe"}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_unreadable_profile_bytes_are_rejected_in_one_line(content, why):
    path = profile_path("EMU-BAD")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(ProfileError, match=why) as e:
        load_profile(path, info=_info("EMU-BAD"))
    assert "\n" not in str(e.value)
