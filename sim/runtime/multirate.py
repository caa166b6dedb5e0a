"""Multirate haptics: a 1 kHz servo process with a local contact model, physics at its own rate.

For scenes whose tick cannot hold 1 ms. The process that built the scene becomes the physics
process and starts a light servo process (no PyBullet, no tissue) that owns the device:

    servo (1 kHz, SCHED_FIFO, pinned)            physics (as fast as it can, <= 1 kHz)
      read device ---- "input" mailbox ---->        newest sample -> targets -> scene.tick
      force from the local model <-- "model" ---    proxy tip, projected target, contact plane

Local model, per servo tick, for the driven tool (world frame = device frame, see devices.py):
    x_t = the port-projected target from the newest device sample (same map and projection as
    the physics), x_p = the proxy tip the physics published,
    F_hand = k (x_p - x_t)                                   (the coupling spring, no damping)
           + k_s max(0, d - n . x_t) n                       (contact plane, when in contact)
with k the scene's coupling stiffness, and the plane (unit normal n along the tissue's reaction
on the tool, offset d = n . x_p, stiffness k_s = k) published only while the tissue pushes on
the tool. Between physics updates the hand thus feels a stiff spring to the last proxy pose plus
a wall where the tissue was; the physics catches up at its own rate.

Every physics tick advances the scene by its fixed dt (1 ms): when physics runs below 1 kHz the
world runs in slow motion while the hand stays stable. The recording holds the physics ticks
(the targets the scene saw), so replay is exact as in the other modes.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import signal
import time

import numpy as np

from sim.runtime.devices import DeviceChoice, WorkspaceMap, open_device, serial_driver
from sim.runtime.mailbox import SnapshotMailbox
from sim.runtime.timing import TickTimer

INPUT_LAYOUT = {"sample": ((9,), "<f8")}  # t, seq, x, y, z, gripper, buttons, status, flags
MODEL_LAYOUT = {"proxy": ((3,), "<f8"), "plane": ((4,), "<f8"), "plane_k": ((1,), "<f8"),
                "tick": ((1,), "<f8")}


class MailboxDevice:
    """The physics side of the input mailbox: looks like a HapticDevice to TickCore."""

    def __init__(self, box: SnapshotMailbox) -> None:
        from haptics.device import DeviceSample

        self.box = box
        self.buf = box.empty()
        self.sample = DeviceSample()

    def read(self):
        s = self.sample
        if self.box.read_into(self.buf) is None:
            s.connected = False
            s.fresh = False
            return s
        v = self.buf["sample"]
        s.t, s.seq = float(v[0]), int(v[1])
        s.position = v[2:5].copy()
        s.gripper = float(v[5])
        s.buttons, s.status = int(v[6]), int(v[7])
        flags = int(v[8])
        s.fresh, s.connected = bool(flags & 1), bool(flags & 2)
        return s

    def write_force(self, force, gripper: float = 0.0) -> None:
        pass  # the servo renders the force

    def zero(self) -> None:
        pass


def run_physics(cfg, choice: DeviceChoice, scene, core, rec, timer: TickTimer, conn, stop, flag) -> str:
    """Become the physics process: start the servo, tick the scene, publish the local model."""
    from sim.runtime.realtime import _loop

    tool = core.wmap.tool
    inst = scene.tools[tool]
    port = {"point": np.asarray(inst.port_point, dtype=float), "max_angle": float(inst.port.max_angle),
            "min_depth": float(inst.spec.min_insert), "max_depth": float(inst.spec.max_insert)}
    k = float(scene.config.stiffness)
    inbox = SnapshotMailbox.create(INPUT_LAYOUT)
    model = SnapshotMailbox.create(MODEL_LAYOUT)
    ctx = mp.get_context("spawn")
    servo_stop = ctx.Event()
    parent, child = ctx.Pipe(duplex=False)
    servo = ctx.Process(target=haptic_servo_main, name="trocar-haptic-servo",
                        args=(cfg, str(choice), core.wmap, port, k, inbox.name, model.name, child,
                              servo_stop))
    servo.start()
    child.close()
    conn.send(("log", f"multirate: haptic servo pid {servo.pid}; physics pid in this process"))
    core.device = MailboxDevice(inbox)
    out = model.empty()

    def publish() -> None:
        x_p = scene.tools[tool].tip()
        out["proxy"][:] = x_p
        r = scene.reaction[tool]
        mag = float(np.linalg.norm(r))
        if mag > 1e-6:
            n = r / mag
            out["plane"][:3] = n
            out["plane"][3] = float(n @ x_p)
            out["plane_k"][0] = k
        else:
            out["plane_k"][0] = 0.0
        out["tick"][0] = scene.tick_count
        model.write(out)

    publish()
    step = core.step

    def step_and_publish(now_ns: int, lateness_ns: int = 0) -> None:
        step(now_ns, lateness_ns)
        publish()

    core.step = step_and_publish
    reason = "end"
    servo_report = None
    try:
        # Wait for the servo's device handshake before physics starts (it sends 'ready').
        while servo.is_alive() and not flag.set and not stop.is_set():
            if parent.poll(0.05):
                try:
                    kind, payload = parent.recv()
                except (EOFError, OSError):
                    break
                if kind == "ready":
                    break
                if kind == "log":
                    conn.send(("log", payload))
                    rec.note(kind="sched", line=payload)
                elif kind == "error":
                    conn.send(("error", payload))
                    return "error"
        gc.collect()
        gc.freeze()
        gc.disable()
        # Physics paces itself to 1 kHz when it can; a late physics tick is the expected case here.
        reason = _loop(cfg, core, rec, timer, _Either(stop, servo_stop), flag)
    finally:
        servo_stop.set()
        servo.join(10)
        if servo.is_alive():
            servo.kill()
            servo.join()
        while parent.poll():
            try:
                kind, payload = parent.recv()
            except (EOFError, OSError):
                break
            if kind == "report":
                servo_report = payload
            elif kind in ("log", "error"):
                conn.send(("log", payload))
        gc.enable()
        physics = timer.report()
        report = dict(servo_report or {})
        report["physics"] = physics
        report["published"] = core.published
        rec.close({"reason": flag.why or reason, "ticks": scene.tick_count, "timing": report,
                   "mode": "multirate"})
        core.recorder = None
        inbox.close()
        inbox.unlink()
        model.close()
        model.unlink()
        conn.send(("report", report))
    return reason


class _Either:
    def __init__(self, *events) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def haptic_servo_main(cfg, device: str, wmap: WorkspaceMap, port: dict, k: float, input_name: str,
                      model_name: str, conn, stop) -> None:
    """The multirate servo process: device I/O and the local contact model at 1 kHz."""
    from sim.ports import project_tip_target
    from sim.runtime.devices import parse_device
    from sim.runtime.realtime import PERIOD_NS, SPIN_NS, _Flag, apply_realtime_sched

    flag = _Flag()
    signal.signal(signal.SIGINT, flag.handler)
    signal.signal(signal.SIGTERM, flag.handler)
    inbox = SnapshotMailbox.attach(input_name, INPUT_LAYOUT)
    model = SnapshotMailbox.attach(model_name, MODEL_LAYOUT)
    m = model.empty()
    sample_out = {"sample": np.zeros(9)}
    timer = TickTimer(capacity=min(int((cfg.seconds or 600) * 1000) + 1000, 1 << 20))
    dev = None
    try:
        for line in apply_realtime_sched(cfg):
            conn.send(("log", "haptic servo: " + line))
        gc.collect()
        gc.freeze()
        gc.disable()
        try:  # last: after ENABLE the device watchdog wants FORCE frames
            dev = open_device(parse_device(device), soft_start_s=cfg.soft_start_s)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            conn.send(("error", str(exc)))
            return
        conn.send(("ready", None))
        targets = wmap.home.copy()
        jaws = np.zeros(len(wmap.home))
        f = np.zeros(3)
        perf = time.perf_counter_ns
        deadline = perf() + PERIOD_NS
        k_check = 0
        v = sample_out["sample"]
        while not flag.set:
            rem = deadline - perf() - SPIN_NS
            if rem > 0:
                time.sleep(rem * 1e-9)
            while perf() < deadline:
                pass
            start = perf()
            s = dev.read()
            v[0], v[1] = s.t, s.seq
            v[2:5] = s.position
            v[5], v[6], v[7] = s.gripper, s.buttons, s.status
            v[8] = int(s.fresh) | (int(s.connected) << 1)
            inbox.write(sample_out)
            if model.read_into(m) is not None and s.connected:
                wmap.apply(s.position, s.gripper, targets, jaws)
                x_t, _, _ = project_tip_target(port["point"], targets[wmap.tool, :3],
                                               max_angle=port["max_angle"], min_depth=port["min_depth"],
                                               max_depth=port["max_depth"])
                f[:] = k * (m["proxy"] - x_t)
                ks = m["plane_k"][0]
                if ks > 0.0:
                    n = m["plane"][:3]
                    depth = m["plane"][3] - float(n @ x_t)
                    if depth > 0.0:
                        f += ks * depth * n
            else:
                f[:] = 0.0
            dev.write_force(f)
            end = perf()
            timer.account(start, deadline, end, None)
            deadline += PERIOD_NS
            late = end - deadline
            if late >= PERIOD_NS:
                missed = late // PERIOD_NS
                deadline += missed * PERIOD_NS
                timer.skipped += missed
            k_check += 1
            if k_check % 8 == 0 and stop.is_set():
                break
    finally:
        if dev is not None:
            try:
                dev.zero()
            finally:
                dev.close()
        gc.enable()
        report = timer.report()
        drv = serial_driver(dev) if dev is not None else None
        if drv is not None:
            p50, p99, pmax = drv.rtt_percentiles()
            report.update(rtt_p50_us=round(p50, 1), rtt_p99_us=round(p99, 1), rtt_max_us=round(pmax, 1))
        inbox.close()
        model.close()
        try:
            conn.send(("report", report))
        except (BrokenPipeError, OSError):
            pass
