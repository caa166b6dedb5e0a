"""Real-time mode: the supervisor, the servo+physics process and the render process.

Processes (see docs/runtime.md):
- supervisor (the `trocar run` process): starts one device emulator per `emu` hand, the servo, then
  the renderer; turns Ctrl-C/SIGTERM into the shared stop event; after the servo has zeroed the
  forces and closed the recording it stops the renderer and the emulators, unlinks the mailbox and
  prints the timing report.
- servo (+physics): builds the session (scene, procedure, hands), compiles (sim.tissue.warmup +
  warm-up ticks, all recorded), publishes the first snapshot, opens the devices, freezes the GC,
  asks for SCHED_FIFO and one CPU, then runs `SessionStep.step` at 1 kHz on the periodic scheduler
  (`sim.runtime.scheduler`) until told to stop.
- render: `sim.render.process.render_main` if importable (window/xr), else the headless stub that
  reads the mailbox at 60 Hz and counts snapshots.

Shutdown order: the servo zeroes every device's force and closes the devices first (its SIGINT handler,
and `haptics.safety`'s, only set flags / zero output; the loop checks the flag every tick), then
closes the recording (END chunk with the timing report); the supervisor then stops the renderer and
the emulator and removes the mailbox.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time

from haptics.force_keeper import ForceKeeper
from haptics.parent_watch import ParentWatch, die_with_parent
from sim.errors import UserError
from sim.runtime.config import RunConfig, default_record_path, session_meta
from sim.runtime.devices import parse_devices, serial_driver, start_emulators
from sim.runtime.keyboard import ScopeKeys, input_layout
from sim.runtime.mailbox import SnapshotMailbox, layout_of, unlink_name
from sim.runtime.scheduler import PERIOD_NS, PeriodicScheduler, SharedStop, StopFlag
from sim.runtime.timing import TickTimer, format_link, format_report

AUTO_MEASURE_TICKS = 200  # `--rate-mode auto`: warm-up ticks timed to choose
AUTO_LIMIT_NS = 800_000  # p90 tick compute above this -> multirate [ns]
EMU_WATCHDOG_GRACE_S = 0.3  # after a servo crash: the device watchdog (50 ms) + ramp, with margin
RENDER_STOP_S = {"xr": 30.0, "other": 5.0}  # how long the renderer may take to close after the stop [s]


# ------------------------------------------------------------------------------ scheduling

def apply_realtime_sched(cfg: RunConfig) -> list[str]:
    """Ask for SCHED_FIFO and pin to one CPU when allowed; returns what was granted, as lines."""
    got = []
    if cfg.realtime_priority and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg.fifo_priority))
            got.append(f"SCHED_FIFO priority {cfg.fifo_priority}: granted")
        except (PermissionError, OSError) as exc:
            got.append(f"SCHED_FIFO: not permitted ({exc.strerror or exc}); running SCHED_OTHER")
    else:
        got.append("SCHED_FIFO: not requested")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cfg.affinity and len(cpus) >= 2:
        # Never every core: serial bytes arrive through kernel workers, the emulator and the
        # renderer need the others.
        try:
            os.sched_setaffinity(0, {cpus[-1]})
            got.append(f"CPU affinity: pinned to CPU {cpus[-1]} of {cpus}")
            # Numba's worker threads would run on the other CPUs at normal priority, and every
            # parallel region would wait for them: on one reserved CPU one thread is faster and
            # steadier (results are bit-identical for any thread count, docs/tissue-solver.md).
            if "numba" in sys.modules:
                sys.modules["numba"].set_num_threads(1)
                got.append("Numba threads: 1 (servo pinned)")
        except OSError as exc:
            got.append(f"CPU affinity: not permitted ({exc.strerror or exc})")
    else:
        got.append(f"CPU affinity: not pinned ({len(cpus)} CPU(s) available)")
    return got


def other_cpus(cfg: RunConfig) -> set[int] | None:
    """CPUs the supervisor, emulator and renderer should use (all but the servo's), or None."""
    if not (cfg.affinity and hasattr(os, "sched_getaffinity")):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[:-1]) if len(cpus) >= 2 else None


# ------------------------------------------------------------------------------ servo

def servo_main(cfg: RunConfig, device: str, conn, stop) -> None:
    """The servo+physics process (see the module docstring). `device`: the per-hand device list
    with every emulator already resolved to its port. Messages to the supervisor over `conn`:
    ('log', line), ('ready', info), ('report', dict), ('error', line).

    It dies with the supervisor (haptics.parent_watch): the supervisor's death is SIGTERM here
    (its flag ends the loop at the next tick) and the loop's stop event also checks getppid()."""
    flag = StopFlag().install()
    die_with_parent()
    watch = ParentWatch(stop)
    try:
        _servo(cfg, device, conn, watch, flag)
    except UserError as exc:
        conn_send(conn, ("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor as one line
        import traceback

        traceback.print_exc()
        conn_send(conn, ("failed", f"servo failed: {type(exc).__name__}: {exc}"))


def conn_send(conn, msg) -> None:
    """To the supervisor, which may be gone (killed): then there is no one to tell."""
    try:
        conn.send(msg)
    except (BrokenPipeError, OSError):
        pass


def exit_how(exitcode: int | None) -> str:
    """How a process ended, in words, from its exit code."""
    if exitcode is None:
        return "still running"
    return f"killed by signal {-exitcode}" if exitcode < 0 else f"exit status {exitcode}"


def conn_log(conn, line: str) -> None:
    conn_send(conn, ("log", line))


def link_report(devices) -> list[dict]:
    """Per hand, the device's link health (haptics.link_health keys; {} for no device)."""
    out = []
    for dev in devices:
        try:
            out.append(dev.link_stats() if dev is not None else {})
        except Exception as exc:  # noqa: BLE001 - a report must not fail on one device
            out.append({"error": f"{type(exc).__name__}: {exc}"})
    return out


def _servo(cfg: RunConfig, device: str, conn, stop, flag: StopFlag) -> None:
    import numba

    from sim.runtime.lockstep import build_session
    from sim.runtime.recording import RecordingWriter
    from sim.runtime.step import SessionStep, close_hands, open_hands
    from sim.tissue import warmup

    choices = parse_devices(device)
    numba.set_num_threads(max(1, min(cfg.threads, numba.config.NUMBA_NUM_THREADS)))
    scene, procedure, hands = build_session(cfg, len(choices))
    warmup()
    t0 = time.perf_counter_ns()
    meta = session_meta(cfg, scene, [h.wmap for h in hands], "realtime")
    meta["t0_perf_ns"] = t0  # recorded t = (perf_counter_ns - t0) / 1e9 [s]
    rec = RecordingWriter(cfg.record, meta, scene.n_tools, n_hands=len(hands))
    step = SessionStep(scene, hands, procedure=procedure, recorder=rec,
                       publish_every=cfg.publish_every, checksum_every=cfg.checksum_every, t0_ns=t0)
    if cfg.guide:
        from sim.runtime.share import GuideChannel

        step.guide = GuideChannel.attach(cfg.guide)
        rec.note(kind="shared", note="instructor console may watch, message and pause this session")
    mailbox = SnapshotMailbox.create(layout_of(step.snapshot()))
    step.mailbox = mailbox
    inputs = SnapshotMailbox.create(input_layout())  # the window's keys and mouse (render -> servo)
    step.scope_control = ScopeKeys(inputs)
    multirate = False
    timer = TickTimer(capacity=min(int((cfg.seconds or 600) * 1000) + 1000, 1 << 20))
    reason = "end"
    keeper = ForceKeeper(())
    try:
        # Warm-up ticks (devices not open yet: tools hold): compile every path the loop takes.
        n_warm = AUTO_MEASURE_TICKS if cfg.rate_mode == "auto" else 3
        warm_ns = []
        for _ in range(n_warm):
            a = time.perf_counter_ns()
            step.step(a)
            b = time.perf_counter_ns()
            step.finish_row(b - a)
            warm_ns.append(b - a)
        scene.checksum()
        step.publish()
        mode = cfg.rate_mode
        if mode == "auto":
            warm_ns.sort()
            p90 = warm_ns[int(0.9 * (len(warm_ns) - 1))]
            mode = "multirate" if p90 > AUTO_LIMIT_NS else "realtime"
            conn.send(("log", f"rate mode auto: tick p90 {p90 / 1e3:.0f} us over {len(warm_ns)} "
                              f"ticks -> {mode}"))
        rec.note(kind="rate_mode", mode=mode)
        conn.send(("ready", {"mailbox": mailbox.name, "layout": mailbox.layout, "inputs": inputs.name,
                             "description": scene.describe(), "record": cfg.record, "mode": mode}))
        if mode == "multirate":
            from sim.runtime.multirate import run_physics

            multirate = True
            reason = run_physics(cfg, choices, step, rec, timer, conn, stop, flag, inputs=inputs.name)
            return
        for line in apply_realtime_sched(cfg):
            conn.send(("log", line))
            rec.note(kind="sched", line=line)
        gc.collect()
        gc.freeze()
        gc.disable()
        open_hands(step.hands, choices, soft_start_s=cfg.soft_start_s, inputs=inputs)
        # FORCE keeps flowing through a long tick (haptics.force_keeper)
        keeper = ForceKeeper([serial_driver(h.device) for h in step.hands]).start()
        rec.flush()
        reason = run_loop(cfg, step, rec, timer, stop, flag)
    finally:
        keeper.stop()
        drivers = [serial_driver(h.device) for h in step.hands]
        devices = [h.device for h in step.hands]
        step.force[:] = 0.0
        close_hands(step.hands)  # force zero first
        gc.enable()
        if not stop.parent_alive():
            flag.why = "parent died"
        if not multirate:  # (run_physics closes the recording and sends its own report)
            _close_session(step, drivers, devices, timer, rec, flag, reason, conn)
        mailbox.close()
        inputs.close()
        if step.guide is not None:
            step.guide.close()
        scene.close()


def rtt_report(drivers) -> dict:
    """Device round trip percentiles [us] per serial driver (hand 0 unsuffixed, hand h '_h')."""
    out = {}
    for h, drv in enumerate(drivers):
        if drv is None:
            continue
        p50, p99, pmax = drv.rtt_percentiles()
        sfx = "" if h == 0 else f"_{h}"
        out.update({f"rtt_p50_us{sfx}": round(p50, 1), f"rtt_p99_us{sfx}": round(p99, 1),
                    f"rtt_max_us{sfx}": round(pmax, 1)})
    return out


def _close_session(step, drivers, devices, timer: TickTimer, rec, flag: StopFlag, reason: str,
                   conn) -> None:
    """Timing report (with each device's link health) into the recording's END chunk and to the
    supervisor."""
    report = timer.report()
    report.update(rtt_report(drivers))
    report["link"] = link_report(devices)
    report["published"] = step.published
    rec.close({"reason": flag.why or reason, "ticks": step.scene.tick_count, "timing": report})
    conn_send(conn, ("report", report))


def run_loop(cfg: RunConfig, step, rec, timer: TickTimer, stop, flag: StopFlag, *,
             after=None) -> str:
    """The 1 kHz loop on the periodic scheduler: one session step per period (then `after()`, if
    given: the multirate physics publishes its local model there). Returns why it stopped."""
    perf = time.perf_counter_ns
    sched = PeriodicScheduler(PERIOD_NS)
    until = None if cfg.seconds is None else perf() + int(cfg.seconds * 1e9)
    do_step = step.step
    finish = step.finish_row
    flush = rec.maybe_flush
    # A shared session's pause flag (one byte the console sets): the tick then holds the attempt.
    paused = step.guide.paused if step.guide is not None else None

    def tick(start: int, lateness: int) -> int:
        if paused is not None and paused[0]:
            step.hold()
            return perf()
        do_step(start, lateness)
        if after is not None:
            after()
        flush(start)
        end = perf()
        finish(end - start)
        return end

    return sched.run(tick, flag=flag, stop=stop, until_ns=until, timer=timer, parts=step.scene.part_ns)


# ------------------------------------------------------------------------------ render

def headless_consumer(name: str, layout: dict, stop, *, rate_hz: float = 60.0, stats=None) -> int:
    """Read the newest snapshot at `rate_hz` until `stop` is set; returns snapshots read.
    stats (optional shared double array, 3): reads, new snapshots, failed reads."""
    box = SnapshotMailbox.attach(name, layout)
    out = box.empty()
    reads = new = failed = 0
    last = -1
    period = 1.0 / rate_hz
    t = time.monotonic()
    try:
        while not stop.is_set():
            seq = box.read_into(out)
            reads += 1
            if seq is None:
                failed += 1
            elif seq != last:
                new += 1
                last = seq
            if stats is not None:
                stats[0], stats[1], stats[2] = reads, new, failed
            t += period
            stop.wait(max(t - time.monotonic(), 0.0))
    finally:
        box.close()
    return new


def render_entry(name: str, layout: dict, description: dict, display: str, stop, stats=None,
                 cpus=None, inputs: str | None = None) -> None:
    """The render process: the renderer if there is one (and a display is wanted), else the stub.
    inputs: the input mailbox's name (the window writes the person's keys and mouse into it). It
    dies with the supervisor (SIGTERM's default action; it holds no device)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us through `stop`
    die_with_parent()
    stop = ParentWatch(stop)  # also covers a supervisor that died before prctl ran
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
        # Mesa's software rasteriser starts one thread per CPU by default; keep it on ours.
        os.environ.setdefault("LP_NUM_THREADS", str(len(cpus)))
    try:
        os.nice(5)  # frames may wait, the haptic servo may not
    except OSError:
        pass
    if display != "headless":
        render_main = renderer()
        if render_main is not None:
            try:
                render_main(name, layout, description, display, stop, inputs=inputs)
                return
            except Exception as exc:  # noqa: BLE001 - the session goes on without a window
                print(f"trocar run: renderer failed ({type(exc).__name__}: {exc}); "
                      "continuing headless", file=sys.stderr, flush=True)
    headless_consumer(name, layout, stop, stats=stats)


def renderer():
    """`sim.render.process.render_main`, or None if the renderer is not installed."""
    try:
        from sim.render.process import render_main
    except ImportError:
        return None
    return render_main


def choose_display(display: str) -> str:
    """'auto': a window if $DISPLAY is set and the renderer imports, else headless."""
    if display != "auto":
        return display
    return "window" if os.environ.get("DISPLAY") and renderer() is not None else "headless"


# ------------------------------------------------------------------------------ supervisor

def run_realtime(cfg: RunConfig, *, log=None, stats=None) -> dict:
    """Run a real-time session to its end (seconds, Ctrl-C, SIGTERM); returns a summary dict:
    report (timing), record, exitcode (servo), mode, render (stub counters)."""
    log = log or (lambda line: print(f"trocar run: {line}", file=sys.stderr, flush=True))
    choices = parse_devices(cfg.device)
    if cfg.record is None:
        cfg.record = default_record_path()
    ctx = mp.get_context("spawn")
    stop = SharedStop(ctx)
    stats = stats if stats is not None else ctx.Array("d", 3, lock=False)
    emus = []
    tmpdir = None
    servo = render = None
    mailbox_name = inputs_name = None
    guide = registration = None
    summary: dict = {"record": cfg.record, "report": None, "exitcode": None, "mode": None}
    cpus = other_cpus(cfg)
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        if any(c.kind == "emu" for c in choices):
            tmpdir = tempfile.mkdtemp(prefix="trocar-run-")
        from sim.runtime.lockstep import emulator_hands

        resolved, emus = start_emulators(choices, emu_args=cfg.emu_args, hand_emu_args=emulator_hands(cfg),
                                         event_log=cfg.emu_event_log, link_dir=tmpdir, cpus=cpus)
        for emu in emus:
            log(f"device emulator pid {emu.pid} on {emu.path}")
        device = ",".join(str(c) for c in resolved)
        if cfg.share:
            from sim.runtime import share

            guide = share.GuideChannel.create()
            cfg.guide = guide.names
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        servo = ctx.Process(target=servo_main, args=(cfg, device, child_conn, stop), name="trocar-servo",
                            daemon=False)
        servo.start()
        child_conn.close()
        summary["servo_pid"] = servo.pid
        log(f"servo pid {servo.pid}; recording {cfg.record}")
        display = choose_display(cfg.display)
        announced = False
        while servo.is_alive() or parent_conn.poll():
            if render is not None and not announced and stats[1] > 0:
                announced = True
                log("renderer stub: reading snapshots")
            if not parent_conn.poll(0.05):
                continue
            try:
                kind, payload = parent_conn.recv()
            except (EOFError, OSError):
                break
            if kind == "log":
                log(payload)
            elif kind == "error":
                summary["error"] = payload
            elif kind == "failed":
                summary["failed"] = payload
            elif kind == "ready":
                mailbox_name = payload["mailbox"]
                summary["mode"] = payload["mode"]
                if stop.is_set():
                    continue
                inputs_name = payload.get("inputs")
                render = ctx.Process(target=render_entry, name="trocar-render",
                                     args=(mailbox_name, payload["layout"], payload["description"],
                                           display, stop, stats, cpus, inputs_name), daemon=True)
                render.start()
                summary["render_pid"] = render.pid
                if guide is not None:
                    registration = share.register(share.registration(cfg, payload))
                    log(f"shared with the instructor console as {registration.stem}")
                log(f"running ({payload['mode']}, display {display}, render pid {render.pid}); "
                    "Ctrl-C stops")
            elif kind == "report":
                summary["report"] = payload
        servo.join()
        summary["exitcode"] = servo.exitcode
    finally:
        stop.set()
        if guide is not None:
            share.unregister(registration)
        if emus and servo is not None and servo.exitcode not in (None, 0):
            # The servo died without zeroing the force: leave the device to its own watchdog
            # (as hardware would be) before the emulator goes away.
            time.sleep(EMU_WATCHDOG_GRACE_S)
        if servo is not None and servo.is_alive():
            servo.join(10)
            if servo.is_alive():
                servo.kill()
                servo.join()
        if render is not None:
            # A headset display ends its XR session cleanly (STOPPING -> EXITING) and stops the
            # Monado root: give it that long before terminating it.
            render.join(RENDER_STOP_S["xr"] if "xr" in display.split("?")[0] else RENDER_STOP_S["other"])
            if render.is_alive():
                render.terminate()
                render.join(5)
        for emu in emus:
            emu.stop()
        if tmpdir is not None:
            try:
                os.rmdir(tmpdir)
            except OSError:
                pass
        for name in (mailbox_name, inputs_name):
            if name is not None:
                unlink_name(name)
        if guide is not None:
            guide.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
    summary["render"] = {"reads": int(stats[0]), "snapshots": int(stats[1]), "failed": int(stats[2])}
    return summary


def summarize(summary: dict) -> tuple[str, int]:
    """Lines for the end of `trocar run` and the exit status."""
    from sim.runtime.recording import read_recording

    lines = []
    code = 0
    if summary.get("error"):
        return summary["error"], 2
    if summary.get("failed"):
        lines.append(summary["failed"])
        code = 1
    if summary.get("report"):
        r = summary["report"]
        title = "timing (haptic servo)" if "physics" in r else f"timing ({summary.get('mode')})"
        lines.append(format_report(r, title))
        if "physics" in r:
            lines.append(format_report(r["physics"], "timing (physics, multirate)"))
        if "rtt_p99_us" in r:
            lines.append(f"  device round trip p50 {r['rtt_p50_us']} p99 {r['rtt_p99_us']} "
                         f"max {r['rtt_max_us']} us")
        link_lines, link_code = format_link(r.get("link") or [])
        lines.extend(link_lines)
        code = max(code, link_code)
        if r.get("servo"):
            lines.append(f"haptic servo: {r['servo']}")
    rs = summary.get("render") or {}
    if rs.get("reads"):
        lines.append(f"  renderer stub: {rs['snapshots']} new snapshots in {rs['reads']} reads at 60 Hz "
                     f"({rs['failed']} without a consistent copy)")
    ex = summary.get("exitcode")
    if ex is not None and ex != 0:
        code = 1
        rec = read_recording(summary["record"])
        n = len(rec.ticks)
        why = exit_how(ex)
        lines.append(f"servo process {why}; recording {summary['record']} readable up to tick "
                     f"{n - 1} ({n / 1000:.3f} s){'; ' + rec.damage if rec.damage else ''}")
    else:
        lines.append(f"recording: {summary['record']}")
    return "\n".join(lines), code
