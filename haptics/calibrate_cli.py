"""`trocar device calibrate PORT` and `trocar device check PORT`: the calibration wizard.

Owns the wizard: the order of the steps, their fixtures, the prompts and accept/redo, and
writing/verifying the profile of haptics/profile.py. The measurements (recording every STATE
frame while a step drives the device, and turning the recordings into the fits of
haptics/calibration.py) are in haptics/calibration_steps.py and, for the stability step,
haptics/calibration_stability.py.

Steps (`--steps`, default all):
  position  handshake, homing, workspace sweep (button 2 held while visiting +stop, -stop, home
            on x, then y, then z) and the reference jig (button 1 pressed in each JIG_POINTS hole,
            in order) -> per-axis encoder offset, gain, sign, residuals in mm.
  force     the handle on a reference spring (`--reference-stiffness`, N/m) at rest: static pushes
            of known commanded force along +-x, +-y, +-z -> per-axis force gain; the same pushes'
            steps give the sensing+actuation dead time (device ticks from the FORCE echo to the
            first encoder count of motion) and the host round trip.

The wizard is paced by the device's buttons, not by the clock, so a person and the emulator's
scripted hand (`--hand script:FILE`, FILE from `--write-jig-script`) go through the same code.
Exit status: 0 pass, 1 a step failed or a profile no longer holds, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from haptics import calibration as C
from haptics import protocol as P
from haptics.calibration_stability import measure_stability
from haptics.calibration_steps import (
    CalibrationFailed,
    Compensation,
    RecordingDevice,
    compensation,
    fit_position,
    fmt,
    measure_force,
    measure_gravity,
    pump,
    record_jig_cycle,
    servo,
)
from haptics.cli_errors import fail
from haptics.device import DeviceError
from haptics.profile import (
    ProfileError,
    load_for_device,
    load_profile,
    make_profile,
    profile_path,
    save_profile,
)
from haptics.sched import request_fifo
from haptics.serial_device import SerialDevice

STEPS = ("position", "gravity", "force", "stability")  # also the order they run in
SECTIONS = ("position", "workspace", "gravity", "force", "latency", "stability")
POSITION_TOL_MM = 0.5  # `check`: jig points must read within this [mm]
FORCE_TOL = 0.02  # `check`: force gain within this (relative)
LATENCY_TOL_MS = 0.5  # `check`: one-way latency within this [ms]
GRAVITY_TOL_N = 0.08  # `check`: holding force within this of the stored model [N]
STABILITY_TOL = 0.10  # `check`: max stable stiffness within this (relative)
WIZARD_FIFO_PRIORITY = 60  # SCHED_FIFO priority of the wizard's host loop, where permitted


def manual_force(dev: SerialDevice, position: dict, comp: Compensation, args, say) -> dict:
    """Step 5 with a load cell (or spring scale) and a person: the device pushes a known command
    along +x, +y, +z in turn against the load cell the handle is fixed to, and the person types
    the reading [N]; gain = reading / command per axis. Readings come from stdin (EOFError when
    there is none). A stored gravity model is added to the pushes (the weight is not the motor)."""
    f_push = min(2.0, 0.4 * dev.spec.max_force)
    say(f"  fix the handle to a load cell (or spring scale); the device pushes {f_push:g} N along "
        "+x, +y, +z in turn: type each reading in newtons and press Enter")
    grav = comp.gravity_cmd

    def cmd(f, s):
        if grav is None or comp.slope is None:
            return f
        return f + C.gravity_force(grav, comp.position(s.position_counts))

    gain = np.zeros(3)
    pump(dev, dev.safety.ramp_s + 0.05)
    for a in range(3):
        f = np.zeros(3)
        f[a] = f_push
        servo(dev, 0.3, lambda s, f=f: cmd(f, s))
        while True:
            text = ask(dev, f"  reading along +{'xyz'[a]} [N]: ", lambda s, f=f: cmd(f, s))
            try:
                reading = float(text)
            except ValueError:
                say(f"  not a number: {text!r}")
                continue
            break
        gain[a] = reading / f_push
        servo(dev, 0.2, lambda s: cmd(np.zeros(3), s))
    if np.any(gain <= 0.2) or np.any(gain >= 5.0):
        raise CalibrationFailed(f"force gains {fmt(gain)} out of range (0.2, 5): wrong readings?")
    return {"gain": gain, "residual_n": np.zeros(3), "push_n": f_push, "reference": "load cell"}


class _Stdin:
    """Lines from fd 0 read without blocking, so the wizard keeps the device fed (FORCE is the
    heartbeat; a blocking input() would trip the device watchdog) while a person types."""

    buf = b""

    @classmethod
    def line(cls, dev: SerialDevice, command) -> str:
        import os
        import select

        while b"\n" not in cls.buf:
            s = dev.read()
            dev.write_force(command(s) if s.connected and dev.states else np.zeros(3))
            r, _, _ = select.select([0], [], [], 0.001)
            if r:
                data = os.read(0, 4096)
                if not data:
                    if cls.buf:
                        break
                    raise EOFError
                cls.buf += data
        line, _, cls.buf = cls.buf.partition(b"\n")
        return line.decode(errors="replace").strip()


def ask(dev: SerialDevice, prompt: str, command=None) -> str:
    """Prompt and read one line from stdin while the host loop runs (command(sample) -> force
    [N, motor units]; zero by default). EOFError when stdin is closed or empty."""
    print(prompt, end="", flush=True)
    return _Stdin.line(dev, command or (lambda s: np.zeros(3)))


# ---------------------------------------------------------------------------------- commands

def _open(port: str) -> RecordingDevice:
    # Steps are the measurement: no dF/dt smoothing (it would blur the step onset), a short soft
    # start, and forgiving watchdogs (host 200 ms, device 250 ms) for the wizard's Python loop on
    # a loaded machine: a trip mid-step would spoil the measurement, and the device still stops
    # within 250 ms if the host dies. The clamp stays.
    # The wizard's loop is a haptic servo: SCHED_FIFO where permitted (haptics.sched), below the
    # runtime servo's 80 and above an emulator's 50.
    request_fifo(WIZARD_FIFO_PRIORITY)
    dev = RecordingDevice(port, max_rate=1e6, ramp_s=0.1, state_timeout_s=0.2,
                          handshake_timeout_s=3.0, auto_reconnect=False, watchdog_ms=250)
    dev.open()
    return dev


def _homed(dev: SerialDevice) -> bool:
    """Wait for a STATE; if the device is not homed, send HOME (the emulator and most devices
    home in place; a device that needs the handle at its reference pose documents that)."""
    pump(dev, 1.0, until=lambda: dev.states > 0)
    if not dev.status & P.STATUS_HOMED:
        dev.command(P.CMD_HOME)
        pump(dev, 0.5, until=lambda: bool(dev.status & P.STATUS_HOMED))
    return bool(dev.status & P.STATUS_HOMED)


FIXTURES = {  # step -> (emulator hand, what a person does)
    "position": ("script", "the jig plate mounted; you will sweep and press the jig holes"),
    "gravity": ("free", "let go of the handle (nothing may touch it); the device holds it"),
    "force": ("spring", "attach the handle to the reference spring and let go"),
    "stability": ("grip", "hold the handle lightly and push it gently along +x into the wall"),
}


def _fixture(dev: SerialDevice, step: str, auto: bool, say) -> None:
    """Get the fixture of `step` in place. An emulator is told with EMU_SET_HAND (it plays the
    person); a real device answers "unknown opcode", and then a person is asked (not in --auto,
    where the fixture is assumed in place, as with a scripted jig)."""
    from haptics.emulator import EMU_SET_HAND
    from haptics.emulator_config import HANDS

    hand, what = FIXTURES[step]
    dev.acks.pop(EMU_SET_HAND, None)
    dev.command(EMU_SET_HAND, HANDS.index(hand))
    pump(dev, 0.5, until=lambda: EMU_SET_HAND in dev.acks)
    ack = dev.acks.get(EMU_SET_HAND)
    if ack is not None and ack.result == P.ACK_OK:
        return
    if not auto and step != "position":
        ask(dev, f"  {what}; then press Enter: ")


def _position_for(step: str, out: dict, stored: dict | None) -> dict:
    """The position calibration a later step builds on: this session's, else the stored profile's."""
    pos = out.get("position") or (stored or {}).get("position")
    if pos is None:
        raise CalibrationFailed(f"the {step} step needs the position calibration "
                                "(run --steps position first)")
    return pos


def _run_steps(dev: RecordingDevice, steps: list[str], stored: dict | None, args,
               say) -> dict:
    info = dev.info
    out: dict = {}
    guided = not args.auto
    for step in [s for s in STEPS if s in steps]:
        while True:
            say(f"step {step}:")
            try:
                _fixture(dev, step, args.auto, say)
                comp = compensation(out, stored)
                if step == "position":
                    rec = record_jig_cycle(dev, args.timeout, say, live=guided)
                    if guided:
                        print()
                    out["position"], out["workspace"] = fit_position(rec, info)
                    p = out["position"]
                    say(f"  sign {fmt(p['sign'])}, gain error {fmt(p['gain_error'])}, offset "
                        f"{fmt(p['offset_mm'])} mm, residual {fmt(p['residual_mm'])} mm: pass")
                elif step == "force":
                    pos = out.get("position") or (stored or {}).get("position")
                    if pos is None:
                        raise CalibrationFailed("the force step needs the position calibration "
                                                "(run --steps position first)")
                    if args.manual_force:
                        out["force"] = manual_force(dev, pos, comp, args, say)
                    else:
                        out["force"], out["latency"] = measure_force(
                            dev, info, pos, args.reference_stiffness, say, comp)
                    f = out["force"]
                    say(f"  force gain {fmt(f['gain'])} (residual {fmt(f['residual_n'])} N)"
                        + ("" if args.manual_force else ": pass"))
                    lat = out.get("latency")
                    if lat is not None and not args.manual_force:
                        say(f"  latency {lat['one_way_ms']:.2f} ms one way ({lat['trials']} "
                            f"steps), round trip p50 {lat['rtt_p50_us']:.0f} us p99 "
                            f"{lat['rtt_p99_us']:.0f} us, STATE {lat['state_rate_hz']:.0f} Hz: "
                            f"pass")
                elif step == "gravity":
                    pos = _position_for(step, out, stored)
                    out["gravity"] = measure_gravity(dev, info, pos, say)
                    g = out["gravity"]
                    say(f"  holding force {fmt(g['holding_mean_n'])} N mean over "
                        f"{g['poses']} poses, range {fmt(g['holding_range_n'])} N, fit residual "
                        f"{fmt(g['residual_n'])} N: pass")
                elif step == "stability":
                    pos = _position_for(step, out, stored)
                    out["stability"] = measure_stability(dev, pos, comp, say)
                    s = out["stability"]
                    say(f"  max stable stiffness {s['max_stiffness_n_per_m']:.0f} N/m (wall "
                        f"damping {s['wall_damping_ns_per_m']:g} N s/m, first oscillation at "
                        f"{s['first_unstable_n_per_m']:.0f} N/m, {len(s['sweep_k'])} levels): "
                        f"pass")
            except CalibrationFailed as exc:
                dev.zero()
                say(f"  FAIL: {exc}")
                if guided and ask(dev, "  r = redo, anything else = stop: ").lower() == "r":
                    continue
                raise
            if guided and ask(dev, "  Enter = accept, r = redo: ").lower() == "r":
                continue
            break
    if "gravity" in out:
        # Measured as motor commands; in newtons through this calibration's force gains (the
        # model is linear in its coefficients, so per-axis gains scale it exactly).
        g = out["gravity"]
        gain = np.asarray((out.get("force") or (stored or {}).get("force") or
                           {"gain": [1.0, 1.0, 1.0]})["gain"], dtype=float)
        coef = np.asarray(g.pop("coefficients_cmd")) * gain[:, None]
        g["coefficients"] = coef
        g["force_gain_applied"] = gain
        g["holding_n"] = np.asarray(g["holding_n"]) * gain
        g["holding_mean_n"] = np.asarray(g["holding_mean_n"]) * gain
        g["holding_range_n"] = np.asarray(g["holding_range_n"]) * gain
        g["residual_n"] = np.asarray(g["residual_n"]) * gain
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.write_jig_script:
        C.write_jig_script(args.write_jig_script, np.array(args.workspace))
        print(f"jig script written to {args.write_jig_script}")
        return 0
    if not args.port:
        return fail("calibrate needs PORT (or --write-jig-script FILE)")
    steps = _steps(args.steps)
    if isinstance(steps, str):
        return fail(steps)
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    if args.force_reference == "load-cell" and args.auto:
        return fail("--force-reference load-cell needs a person typing readings (not --auto)")
    args.manual_force = (args.force_reference or ("spring" if args.auto else "load-cell")) \
        == "load-cell" and "force" in steps
    say = print
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return fail(str(exc))
    try:
        info = dev.info
        say(f"step handshake: {info.serial}, protocol {info.protocol[0]}.{info.protocol[1]}, "
            f"firmware {'.'.join(map(str, info.firmware))}: pass")
        homed = _homed(dev)
        say(f"step homing: {'homed' if homed else 'NOT homed'}: {'pass' if homed else 'FAIL'}")
        if not homed:
            return 1
        stored = None
        try:  # steps not run this time keep their values from a valid stored profile
            stored = (load_for_device(info) if args.profile is None
                      else load_profile(args.profile, info=info))
        except ProfileError:
            pass
        try:
            new = _run_steps(dev, steps, stored, args, say)
        except CalibrationFailed:
            return 1
        body = {k: v for k, v in (stored or {}).items() if k in SECTIONS}
        body.update(new)
        path = save_profile(make_profile(info, body), args.profile)
        dev.command(P.CMD_SAVE_CALIBRATION)
        pump(dev, 0.05)
        say(f"profile written: {path}")
        if args.report:
            from haptics.calibration_report import write_report

            try:
                write_report(args.report, load_profile(path, info=info))
            except OSError as exc:
                return fail(f"cannot write report {args.report}: {exc.strerror}")
            say(f"report written: {args.report}")
        return 0
    except EOFError:
        print()
        return fail("no answer on stdin (closed or not a terminal, e.g. CI): the guided steps "
                     "need a person typing; use --auto with the emulator or a scripted hand. "
                     "Force zeroed, profile not written")
    except KeyboardInterrupt:
        return fail("calibration interrupted; force zeroed, profile not written")
    finally:
        dev.close()


def cmd_check(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.reference_stiffness <= 0 or args.timeout <= 0:
        return fail("--reference-stiffness [N/m] and --timeout [s] must be > 0")
    try:
        dev = _open(args.port)
    except DeviceError as exc:
        return fail(str(exc))
    try:
        try:
            stored = (load_for_device(dev.info) if args.profile is None
                      else load_profile(args.profile, info=dev.info))
        except ProfileError as exc:
            dev.close()
            return fail(str(exc))
        steps = _steps(args.steps) if args.steps else [s for s in STEPS if s in stored]
        if isinstance(steps, str):
            return fail(steps)
        args.auto = True
        args.manual_force = False
        try:
            new = _run_steps(dev, steps, stored, args, print)
        except CalibrationFailed:
            return 1
        ok = True
        if "position" in new:
            pos = stored["position"]
            # Where the stored calibration puts the jig points measured just now.
            meas = np.asarray(new["position"]["slope_counts_per_m"]) * C.JIG_POINTS + np.asarray(
                new["position"]["offset_counts"])
            got = C.counts_to_position(meas, np.asarray(pos["slope_counts_per_m"]),
                                       np.asarray(pos["offset_counts"]))
            err = float(np.max(np.abs(got - C.JIG_POINTS))) * 1e3
            holds = err <= POSITION_TOL_MM
            ok &= holds
            print(f"position: jig points read within {err:.3f} mm with the stored profile "
                  f"(limit {POSITION_TOL_MM} mm): {'holds' if holds else 'DOES NOT HOLD'}")
        if "force" in new and "force" in stored and "latency" in new:
            g_old = np.asarray(stored["force"]["gain"])
            rel = float(np.max(np.abs(np.asarray(new["force"]["gain"]) / g_old - 1.0)))
            holds = rel <= FORCE_TOL
            ok &= holds
            print(f"force: gain within {rel * 100:.2f} % of the stored profile (limit "
                  f"{FORCE_TOL * 100:g} %): {'holds' if holds else 'DOES NOT HOLD'}")
            d = abs(new["latency"]["one_way_ms"] - stored.get("latency", {}).get("one_way_ms", 0))
            holds = d <= LATENCY_TOL_MS
            ok &= holds
            print(f"latency: {new['latency']['one_way_ms']:.2f} ms, {d:.2f} ms from the stored "
                  f"profile (limit {LATENCY_TOL_MS} ms): {'holds' if holds else 'DOES NOT HOLD'}")
        if "gravity" in new and "gravity" in stored:
            g = new["gravity"]
            old = C.gravity_force(np.asarray(stored["gravity"]["coefficients"]),
                                  np.asarray(g["pose_m"]))
            err = float(np.max(np.abs(np.asarray(g["holding_n"]) - old)))
            holds = err <= GRAVITY_TOL_N
            ok &= holds
            print(f"gravity: holding force within {err:.3f} N of the stored model (limit "
                  f"{GRAVITY_TOL_N} N): {'holds' if holds else 'DOES NOT HOLD'}")
        if "stability" in new and "stability" in stored:
            k_new = new["stability"]["max_stiffness_n_per_m"]
            k_old = stored["stability"]["max_stiffness_n_per_m"]
            rel = abs(k_new / k_old - 1.0)
            holds = rel <= STABILITY_TOL
            ok &= holds
            print(f"stability: max stable stiffness {k_new:.0f} N/m, {rel * 100:.1f} % from the "
                  f"stored {k_old:.0f} N/m (limit {STABILITY_TOL * 100:g} %): "
                  f"{'holds' if holds else 'DOES NOT HOLD'}")
        print(f"profile {profile_path(dev.info.serial) if args.profile is None else args.profile}"
              f" {'holds' if ok else 'DOES NOT HOLD: recalibrate'} ({time.monotonic() - t0:.1f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, EOFError):
        return fail("check interrupted; force zeroed")
    finally:
        dev.close()


def _steps(text: str) -> list[str] | str:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        return f"unknown --steps {','.join(bad) or repr(text)}: choose from {','.join(STEPS)}"
    return steps


def add_arguments(cal: argparse.ArgumentParser, chk: argparse.ArgumentParser) -> None:
    """Options of `trocar device calibrate` and `trocar device check`."""
    for p in (cal, chk):
        p.add_argument("--reference-stiffness", type=float, default=200.0,
                       help="stiffness of the reference spring for the force step [N/m]")
        p.add_argument("--timeout", type=float, default=30.0,
                       help="longest wait for the sweep and jig presses [s] (default 30)")
        p.add_argument("--profile", help="profile file (default: per serial in the config dir)")
    cal.add_argument("port", nargs="?", help="serial port or pty path")
    cal.add_argument("--auto", action="store_true",
                     help="no prompts (scripted hands, the emulator): accept every passing step")
    cal.add_argument("--steps", default=",".join(STEPS),
                     help="comma list: position,gravity,force,stability (default all; they run "
                          "in that order)")
    cal.add_argument("--force-reference", choices=("spring", "load-cell"),
                     help="force step: the reference spring (default with --auto) or load-cell "
                          "readings typed by a person (default without --auto)")
    cal.add_argument("--report", metavar="FILE.html",
                     help="also write an HTML report of the profile with plots (workspace, "
                          "residuals, force fit, gravity, stability sweep, latency)")
    cal.add_argument("--write-jig-script", metavar="FILE",
                     help="write the reference jig procedure as an emulator hand script and exit")
    cal.add_argument("--workspace", type=float, nargs=3, default=(0.08, 0.08, 0.08),
                     help="half extents for --write-jig-script [m] (the device's INFO values)")
    chk.add_argument("port", help="serial port or pty path")
    chk.add_argument("--steps", help="comma list (default: what the profile has)")
