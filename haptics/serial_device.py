"""Serial host driver: a HapticDevice speaking the trocar protocol through pyserial.

Owns the device API on top of the link (haptics.serial_link.SerialLink: port, handshake,
commands, STATE, watchdog, reconnection): open() with its handshake deadline, the newest sample,
FORCE frames through the safety chain (haptics.safety), the keeper's heartbeat, the confirmed
shutdown, the counters for monitors, and `probe` (INFO only, never enabling). EmulatedDevice
(haptics/emulated_device.py) is the same driver connected to an emulator process it spawns.

open() gives up after `handshake_timeout_s` (HANDSHAKE_TIMEOUT_S, 2 s) with one line.

Shutdown: close() sends zero force with the enable flag clear and CMD DISABLE, then keeps
sending both every SHUTDOWN_RESEND_S until the device's ACK of that DISABLE arrives or
SHUTDOWN_CONFIRM_S passes (`shutdown_confirmed` says which). The device watchdog is the last
line when even that fails.

Nothing here raises after open(): every failure becomes a DeviceEvent with a one-line message,
the sample says connected=False, and FORCE frames carry zero force with the enable flag clear.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from haptics import protocol as P
from haptics import safety
from haptics.device import DeviceError, DeviceSample, DeviceSpec, HapticDevice
from haptics.serial_link import (
    PHASE_CLOSED,
    PHASE_DISCONNECTED,
    PHASE_HANDSHAKE,
    PHASE_INCOMPATIBLE,
    PHASE_RUNNING,
    RTT_RING,
    SerialLink,
)

SHUTDOWN_CONFIRM_S = 0.3  # close() waits this long at most for DISABLE's ACK [s]
SHUTDOWN_RESEND_S = 0.02  # ... resending zero force + DISABLE this often meanwhile [s]


class SerialDevice(SerialLink, HapticDevice):
    """A trocar-protocol device on a serial port (or anything serial_for_url opens).

    link_options: SerialLink's (url, baudrate, watchdog_ms, state_timeout_s, handshake_timeout_s,
    max_force, max_rate, ramp_s, auto_reconnect, reconnect_interval_s, auto_reenable).
    """

    def __init__(self, url: str, **link_options: object) -> None:
        super().__init__(url, **link_options)
        self.shutdown_confirmed: bool | None = None  # close(): DISABLE acknowledged (None: not yet)
        self._running_at_close = False
        self._t_loop_force = 0.0  # last write_force from the loop [s, perf_counter]
        self._keeper_zeroed = False  # the keeper zeroed the output: soft start when the loop is back
        self.keeper_frames = 0  # FORCE frames the keeper sent [count]

    # -------------------------------------------------------------------------------- public
    @property
    def spec(self) -> DeviceSpec:
        if self._spec is None:
            raise DeviceError(f"{self.url}: device not open")
        return self._spec

    def open(self) -> None:
        """Open the port and run the handshake; DeviceError (one line) if that fails."""
        self._open_port(raise_errors=True)
        self._opening = True
        try:
            self._handshake()
        finally:
            self._opening = False
        self.uptime.update(True)
        safety.register(self)

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.handshake_timeout_s
        while self.phase != PHASE_RUNNING:
            self.poll()
            if self.phase == PHASE_INCOMPATIBLE:
                self._close_port()
                raise DeviceError(self.last_error or "incompatible device")
            if self.phase == PHASE_DISCONNECTED:
                self._close_port()
                raise DeviceError(self.last_error or f"{self.url}: disconnected")
            if time.monotonic() > deadline:
                what = ("no INFO" if self.info is None else "ENABLE not acknowledged")
                self._close_port()
                self.phase = PHASE_CLOSED
                raise DeviceError(
                    f"{self.url}: no answer from a trocar device within "
                    f"{self.handshake_timeout_s:g} s ({what}; check the port and that the "
                    f"firmware speaks trocar protocol {P.PROTOCOL_MAJOR}.x)")
            self.wait(0.002)

    def close(self) -> None:
        """Zero force and disable the device, confirmed by its ACK or retried until
        SHUTDOWN_CONFIRM_S (see the module docstring), then close the port. Idempotent."""
        if self.phase != PHASE_CLOSED:
            self._running_at_close = self.phase == PHASE_RUNNING
        if self._ser is not None and self.phase not in (PHASE_INCOMPATIBLE, PHASE_CLOSED):
            self.shutdown_confirmed = self._confirmed_disable()
        else:
            self.emergency_zero()
        self._close_port()
        self.phase = PHASE_CLOSED
        safety.unregister(self)

    def emergency_zero(self) -> int:
        """Send zero force with enable clear, then CMD DISABLE, once (signal handlers and exit
        hooks call this: it never waits). Returns DISABLE's token (-1: nothing sent). Never
        raises."""
        self.safety.reset()
        self._keeper_zeroed = True  # a keeper thread, if any, may only send zero from now on
        if self._ser is None:
            return -1
        try:
            self._send_force(0.0, 0.0, 0.0, 0.0, 0)
            return self._send_cmd(P.CMD_DISABLE, 0)
        except Exception:  # noqa: BLE001 - exit path
            return -1

    def _confirmed_disable(self) -> bool:
        """Zero + DISABLE, resent every SHUTDOWN_RESEND_S until DISABLE's ACK (True) or
        SHUTDOWN_CONFIRM_S (False). Never raises."""
        token = self.emergency_zero()
        t_end = time.monotonic() + SHUTDOWN_CONFIRM_S
        t_resend = time.monotonic() + SHUTDOWN_RESEND_S
        while token >= 0 and self._ser is not None:
            ack = self.acks.get(P.CMD_DISABLE)
            if ack is not None and ack.token == token and ack.result == P.ACK_OK:
                return True
            now = time.monotonic()
            if now >= t_end:
                break
            if now >= t_resend:
                t_resend = now + SHUTDOWN_RESEND_S
                try:
                    self._send_force(0.0, 0.0, 0.0, 0.0, 0)
                    if self._ser is not None:
                        self._send(P.encode(P.Cmd(token, P.CMD_DISABLE, 0)))
                except Exception:  # noqa: BLE001 - exit path
                    break
            self.wait(0.002)
        self._event("shutdown_unconfirmed", f"{self.url}: DISABLE not acknowledged within "
                    f"{SHUTDOWN_CONFIRM_S * 1000:.0f} ms; the device watchdog must stop the force")
        return False

    def read(self) -> DeviceSample:
        """The newest sample; drains the port first. Never blocks, never raises."""
        self.poll()
        s = DeviceSample(connected=self.connected, error=self.last_error)
        if self._state_payload and self._spec is not None:
            v = P.STATE_STRUCT.unpack(self._state_payload)
            spec = self._spec
            cpm = spec.counts_per_m
            s.t = self._state_t
            s.seq = v[0]
            s.t_device_us = v[1]
            s.position_counts = np.array(v[2:5], dtype=np.int64)
            s.position = np.array((v[2] / cpm[0], v[3] / cpm[1], v[4] / cpm[2]))
            s.gripper = v[5] / spec.gripper_counts_per_rad
            s.buttons = v[6]
            s.status = v[7]
            s.force_applied = np.array((v[8] * 1e-3, v[9] * 1e-3, v[10] * 1e-3))
        s.fresh = self._state_new
        self._state_new = False
        return s

    def write_force(self, force: Sequence[float] | np.ndarray, gripper: float = 0.0) -> None:
        """Send this tick's FORCE through the safety chain; zero unless the link is running."""
        if self._ser is None or self.phase == PHASE_HANDSHAKE:
            return
        self._t_loop_force = time.perf_counter()
        if self._keeper_zeroed:
            self._keeper_zeroed = False
            self.safety.reset()
        if self.phase == PHASE_RUNNING:
            out = self.safety.apply(float(force[0]), float(force[1]), float(force[2]),
                                    float(gripper), time.perf_counter())
            self._send_force(out[0], out[1], out[2], self.safety.gripper_out, P.FORCE_ENABLE)
        else:
            # Link lost or device not enabled: keep the heartbeat, with zero force.
            self._send_force(0.0, 0.0, 0.0, 0.0, 0)

    def rtt_percentiles(self, qs: Sequence[float] = (50, 99, 100)) -> list[float]:
        """Round-trip percentiles [us] over the kept samples (NaN if none)."""
        n = min(self.rtt_count, RTT_RING)
        if n == 0:
            return [float("nan")] * len(qs)
        return [float(x) for x in np.percentile(self.rtt_us[:n], qs)]

    def stats(self) -> dict:
        """Counters for monitors and benchmarks."""
        p50, p99, pmax = self.rtt_percentiles()
        d = self.decoder
        return {"phase": self.phase, "states": self.states, "frames_lost": self.frames_lost,
                "duplicates": self.duplicates, "crc_errors": d.crc_errors,
                "framing_errors": d.cobs_errors + d.short_frames + d.oversize,
                "bad_messages": self.bad_messages, "device_faults": self.device_faults,
                "disconnects": self.disconnects, "rtt_p50_us": p50, "rtt_p99_us": p99,
                "rtt_max_us": pmax}

    def link_stats(self) -> dict:
        """Link health (keys in haptics.link_health). A bare driver applies no calibration
        profile: calibrated is False (CalibratedDevice says whether its profile holds)."""
        d = self.decoder
        up = self.uptime
        return {"frames_ok": self.states, "frames_lost": self.frames_lost,
                "crc_errors": d.crc_errors,
                "framing_errors": d.cobs_errors + d.short_frames + d.oversize,
                "disconnects": up.downs, "reconnects": up.reconnects,
                "time_without_device_s": round(up.down_s(), 4), "ever_connected": up.ever_up,
                "connected": (self.phase == PHASE_RUNNING if self.phase != PHASE_CLOSED
                              else self._running_at_close), "calibrated": False,
                "calibration_note": "no calibration profile applied (bare driver)",
                "shutdown_confirmed": self.shutdown_confirmed}

    def keep_alive(self, silence_s: float, hold_s: float) -> bool:
        """For a keeper thread (haptics.force_keeper): when no FORCE frame went out for
        `silence_s` [s], send one, so that a loop stuck in a long tick does not trip the device
        watchdog. It repeats the last force while the loop has been silent for less than
        `hold_s` [s], then sends zero force with the enable flag clear (and the soft start runs
        again when the loop is back). Returns whether it sent. Never raises; never changes the
        link's state (a failed write is the loop's to notice)."""
        with self._tx_lock:
            ser = self._ser
            now = time.perf_counter()
            if ser is None or self.phase != PHASE_RUNNING or now - self._t_last_tx < silence_s:
                return False
            if now - self._t_loop_force < hold_s and not self._keeper_zeroed:
                f, g, flags = self.last_force_sent, self.safety.gripper_out, self.last_flags_sent
            else:
                f, g, flags = (0.0, 0.0, 0.0), 0.0, 0
                self._keeper_zeroed = True
            try:
                ser.write(self._force_frame(f[0], f[1], f[2], g, flags))
            except Exception:  # noqa: BLE001 - the loop's next write reports a dead port
                return False
            self.keeper_frames += 1
            return True


def probe(url: str, timeout_s: float = 0.5) -> P.Info:
    """Handshake only: open `url`, ask for INFO, close. DeviceError if there is no answer."""
    dev = SerialDevice(url, handshake_timeout_s=timeout_s, auto_reconnect=False)
    dev.configure = False
    dev._open_port(raise_errors=True)
    try:
        deadline = time.monotonic() + timeout_s
        while dev.info is None:
            dev.poll()
            if dev.phase in (PHASE_INCOMPATIBLE, PHASE_DISCONNECTED):
                raise DeviceError(dev.last_error or f"{url}: disconnected")
            if time.monotonic() > deadline:
                raise DeviceError(f"{url}: no INFO within {timeout_s:g} s")
            dev.wait(0.005)
        return dev.info
    finally:
        dev._close_port()
