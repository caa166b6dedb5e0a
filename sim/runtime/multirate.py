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

Safety (issue 11): the servo keeps the last good model when a read of the mailbox is torn (no
click to zero); a model older than MODEL_STALE_S renders zero force, and one older than
MODEL_DEAD_S (after it was live once) ends the servo: zero, DISABLE, exit. The servo dies with
the physics process (haptics.parent_watch: PR_SET_PDEATHSIG and a getppid heartbeat); the
physics ends the session when the servo dies and reports it ("haptic servo process killed by
signal 9"), the device watchdog having stopped the force.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os

import numpy as np

from haptics.force_keeper import ForceKeeper
from haptics.parent_watch import ParentWatch, die_with_parent
from sim.runtime.devices import WorkspaceMap, parse_devices, serial_driver
from sim.runtime.keyboard import input_layout
from sim.runtime.mailbox import SnapshotMailbox
from sim.runtime.scheduler import PERIOD_NS, PeriodicScheduler, SharedStop, StopFlag
from sim.runtime.timing import TickTimer

SAMPLE_FIELDS = 9  # t, seq, x, y, z, gripper, buttons, status, flags (one input row per hand)
#: The servo renders zero force from a physics model older than this [s]: the physics publishes
#: every physics tick (<= 1 kHz); a hand moving 0.5 m/s moves 5 cm against a stale proxy in it.
MODEL_STALE_S = 0.1
#: ... and ends (zero, DISABLE, exit) once the model, live before, is older than this [s]: the
#: physics is hung or gone without its death reaching us.
MODEL_DEAD_S = 2.0


def sample_layout(n_hands: int) -> dict:
    """The servo -> physics mailbox: the newest device sample per hand."""
    return {"sample": ((n_hands, SAMPLE_FIELDS), "<f8")}


def model_layout(n_hands: int) -> dict:
    """The physics -> servo mailbox: per hand, proxy tip (3,) [m], contact plane (n (3,), d [m]),
    plane stiffness [N/m] (0: no contact), the tool it drives (an instrument exchange happens in
    the physics' step; the servo follows it); the physics tick."""
    return {"proxy": ((n_hands, 3), "<f8"), "plane": ((n_hands, 4), "<f8"),
            "plane_k": ((n_hands,), "<f8"), "tool": ((n_hands,), "<f8"), "tick": ((1,), "<f8")}


class MailboxDevice:
    """The physics side of the input mailbox for one hand: looks like a HapticDevice to the step."""

    def __init__(self, box: SnapshotMailbox, hand: int) -> None:
        from haptics.device import DeviceSample

        self.box = box
        self.hand = hand
        self.buf = box.empty()
        self.sample = DeviceSample()

    def read(self):
        s = self.sample
        if self.box.read_into(self.buf) is None:
            # Nothing from the servo yet (not connected), or no consistent copy this time (the
            # servo was writing: the last sample stands, not fresh). Taken as a dropped link, a
            # torn read stopped the tool's link-up glide for a tick: 1.5 N of coupling damping.
            s.fresh = False
            return s
        v = self.buf["sample"][self.hand]
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

    def close(self) -> None:
        pass


def run_physics(cfg, choices, step, rec, timer: TickTimer, conn, stop, flag, *,
                inputs: str | None = None) -> str:
    """Become the physics process: start the servo, tick the session, publish the local model.
    inputs: the window's input mailbox name (keyboard hands read it in the haptic servo)."""
    from sim.runtime.realtime import conn_send, run_loop

    scene = step.scene
    n = len(step.hands)
    ports = []  # per tool (a hand may exchange its instrument)
    for inst in scene.tools:
        ports.append({"point": np.asarray(inst.port_point, dtype=float),
                      "max_angle": float(inst.port.max_angle), "min_depth": float(inst.spec.min_insert),
                      "max_depth": float(inst.spec.max_insert)})
    k = float(scene.config.stiffness)
    inbox = SnapshotMailbox.create(sample_layout(n))
    model = SnapshotMailbox.create(model_layout(n))
    ctx = mp.get_context("spawn")
    servo_stop = SharedStop(ctx)
    parent, child = ctx.Pipe(duplex=False)
    servo = ctx.Process(target=haptic_servo_main, name="trocar-haptic-servo",
                        args=(cfg, ",".join(str(c) for c in choices), [h.wmap for h in step.hands],
                              ports, k, inbox.name, model.name, child, servo_stop, inputs,
                              os.getppid()))
    servo.start()
    child.close()
    conn.send(("log", f"multirate: haptic servo pid {servo.pid}; physics pid in this process"))
    for h, hand in enumerate(step.hands):
        hand.device = MailboxDevice(inbox, h)
    out = model.empty()

    def publish() -> None:
        for h, hand in enumerate(step.hands):
            tool = hand.wmap.tool
            out["tool"][h] = tool
            x_p = scene.tools[tool].tip()
            out["proxy"][h] = x_p
            r = scene.reaction[tool]
            mag = float(np.linalg.norm(r))
            if mag > 1e-6:
                nrm = r / mag
                out["plane"][h, :3] = nrm
                out["plane"][h, 3] = float(nrm @ x_p)
                out["plane_k"][h] = k
            else:
                out["plane_k"][h] = 0.0
        out["tick"][0] = scene.tick_count
        model.write(out)

    publish()
    reason = "end"
    servo_report = None
    servo_dead = _Dead(servo)
    try:
        # Wait for the servo's device handshake before physics starts (it sends 'ready'). Its
        # messages are read until the pipe ends, not while it lives: a servo that failed to open
        # the device may exit before we look, and its error must still end the session (exit 2).
        ready = False
        while not flag.set and not stop.is_set():
            if not parent.poll(0.05):
                if not servo.is_alive() and not parent.poll():
                    break
                continue
            try:
                kind, payload = parent.recv()
            except (EOFError, OSError):
                break
            if kind == "ready":
                ready = True
                break
            if kind == "log":
                conn_send(conn, ("log", payload))
                rec.note(kind="sched", line=payload)
            elif kind == "error":
                conn_send(conn, ("error", payload))
                return "error"
        if not ready:
            if flag.set or stop.is_set():
                return "stopped"
            servo.join(5)
            conn_send(conn, ("error", f"haptic servo exited before the device was open ({_how(servo)})"))
            return "error"
        gc.collect()
        gc.freeze()
        gc.disable()
        # Physics paces itself to 1 kHz when it can; a late physics tick is the expected case here.
        reason = run_loop(cfg, step, rec, timer, _Either(stop, servo_stop, servo_dead), flag,
                          after=publish)
        if servo_dead.dead:
            reason = "haptic servo died"
            conn_send(conn, ("failed", f"haptic servo process {_how(servo)}; its force was left to the "
                                   "device watchdog; session stopped"))
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
                conn_send(conn, ("log", payload))
        gc.enable()
        physics = timer.report()
        report = dict(servo_report or {})
        if servo_report is None:  # it died: what the physics saw of the link is all there is
            report["servo"] = f"dead ({_how(servo)})"
        report["physics"] = physics
        report["published"] = step.published
        if isinstance(stop, ParentWatch) and not stop.parent_alive():
            flag.why = "parent died"
        rec.close({"reason": flag.why or reason, "ticks": scene.tick_count, "timing": report,
                   "mode": "multirate"})
        step.recorder = None
        for hand in step.hands:
            hand.device = None
        inbox.close()
        inbox.unlink()
        model.close()
        model.unlink()
        conn_send(conn, ("report", report))
    return reason


def _how(proc) -> str:
    from sim.runtime.realtime import exit_how

    return exit_how(proc.exitcode)


class _Either:
    def __init__(self, *events) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class _Dead:
    """is_set() once `proc` has exited (one waitpid(WNOHANG) per look)."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.dead = False

    def is_set(self) -> bool:
        if not self.proc.is_alive():
            self.dead = True
        return self.dead


def haptic_servo_main(cfg, devices: str, wmaps: list[WorkspaceMap], ports: list[dict], k: float,
                      input_name: str, model_name: str, conn, stop, window_inputs: str | None = None,
                      supervisor_pid: int = 0) -> None:
    """The multirate servo process: every hand's device I/O and local contact model at 1 kHz, on
    the same periodic scheduler as the real-time servo (RT idle share included). It stops (zero,
    DISABLE, exit) when its parent (the physics) or the supervisor dies: it runs SCHED_FIFO and
    notices within 8 ticks, where the physics, at normal priority on a loaded machine, may not
    run for a while."""
    from sim.ports import project_tip_target
    from sim.runtime.realtime import apply_realtime_sched, conn_log, link_report, rtt_report
    from sim.runtime.step import Hand, close_hands, open_hands

    flag = StopFlag().install()
    die_with_parent()  # the physics process is our parent: its death is SIGTERM here
    watch = ParentWatch(stop, also=(supervisor_pid,) if supervisor_pid else ())
    choices = parse_devices(devices)
    n = len(choices)
    inbox = SnapshotMailbox.attach(input_name, sample_layout(n))
    model = SnapshotMailbox.attach(model_name, model_layout(n))
    m = model.empty()  # the last good model
    fresh_model = model.empty()  # a read lands here first: a torn one must not reach m
    stale_ns, dead_ns = int(MODEL_STALE_S * 1e9), int(MODEL_DEAD_S * 1e9)
    mstate = [0, 0, 0]  # newest model seq, when it was first seen [ns], models seen
    keys = None if window_inputs is None else SnapshotMailbox.attach(window_inputs, input_layout())
    sample_out = {"sample": np.zeros((n, SAMPLE_FIELDS))}
    timer = TickTimer(capacity=min(int((cfg.seconds or 600) * 1000) + 1000, 1 << 20))
    hands = [Hand(None, w) for w in wmaps]
    drivers: list = []
    keeper = ForceKeeper(())
    try:
        for line in apply_realtime_sched(cfg):
            conn.send(("log", "haptic servo: " + line))
        gc.collect()
        gc.freeze()
        gc.disable()
        try:  # last: after ENABLE the device watchdog wants FORCE frames
            open_hands(hands, choices, soft_start_s=cfg.soft_start_s, inputs=keys)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            conn.send(("error", str(exc)))
            return
        drivers = [serial_driver(h.device) for h in hands]
        keeper.devices = [d for d in drivers if d is not None]
        keeper.start()
        conn.send(("ready", None))
        targets = wmaps[0].home.copy()
        jaws = np.zeros(len(targets))
        f = np.zeros(3)
        v = sample_out["sample"]
        devs = [h.device for h in hands]
        link_up = [False] * len(devs)  # per hand: the last sample was applied (glide on link-up)

        def tick(start: int, lateness: int) -> None:
            seq = model.read_into(fresh_model)
            if seq is not None:  # consistent: take it (a torn read keeps the last good model)
                for name in m:
                    np.copyto(m[name], fresh_model[name])
                if seq != mstate[0]:
                    mstate[0], mstate[1] = seq, start
                    mstate[2] += 1
            age = start - mstate[1]
            have_model = mstate[2] > 0 and age <= stale_ns
            if mstate[2] > 1 and age > dead_ns:  # (the first model is published before we start)
                flag.set, flag.why = True, f"physics model older than {MODEL_DEAD_S:g} s"
            for h, dev in enumerate(devs):
                s = dev.read()
                row = v[h]
                row[0], row[1] = s.t, s.seq
                row[2:5] = s.position
                row[5], row[6], row[7] = s.gripper, s.buttons, s.status
                row[8] = int(s.fresh) | (int(s.connected) << 1)
                if have_model and s.connected:
                    w = wmaps[h]
                    if not link_up[h]:  # the same glide as the physics process's step
                        w.connect(s.position, targets, PERIOD_NS * 1e-9)
                        link_up[h] = True
                    for _ in w.instruments:  # the physics' step exchanged this hand's instrument
                        if int(m["tool"][h]) == w.tool:
                            break
                        w.exchange(s.position, targets, PERIOD_NS * 1e-9)
                    port = ports[w.tool]
                    w.apply(s.position, s.gripper, targets, jaws)
                    x_t, _, _ = project_tip_target(port["point"], targets[w.tool, :3],
                                                   max_angle=port["max_angle"],
                                                   min_depth=port["min_depth"], max_depth=port["max_depth"])
                    f[:] = k * (m["proxy"][h] - x_t)
                    ks = m["plane_k"][h]
                    if ks > 0.0:
                        nrm = m["plane"][h, :3]
                        depth = m["plane"][h, 3] - float(nrm @ x_t)
                        if depth > 0.0:
                            f[:] += ks * depth * nrm
                else:
                    link_up[h] = False
                    f[:] = 0.0
                dev.write_force(f)
            inbox.write(sample_out)

        why = PeriodicScheduler(PERIOD_NS).run(tick, flag=flag, stop=watch, timer=timer)
        if watch.orphaned:
            why = "the session's process died"
        conn_log(conn, f"haptic servo: stopped ({flag.why or why})")
    finally:
        keeper.stop()
        devs_open = [h.device for h in hands]
        close_hands(hands)  # zero, DISABLE confirmed by the device, close
        gc.enable()
        report = timer.report()
        report.update(rtt_report(drivers))
        report["link"] = link_report(devs_open)
        inbox.close()
        model.close()
        if keys is not None:
            keys.close()
        try:
            conn.send(("report", report))
        except (BrokenPipeError, OSError):
            pass
