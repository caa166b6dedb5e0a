"""`trocar device emulate|list|monitor` and `trocar bench device|device-fuzz`.

Errors a user can cause (bad port, no answer, bad option) print one line
`trocar: error: ...` and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse

from haptics.cli_errors import fail


def _cmd_emulate(args: argparse.Namespace) -> int:
    from haptics.emulator import run_from_args
    from haptics.emulator_config import EmulatorArgError

    try:
        return run_from_args(args)
    except (EmulatorArgError, OSError) as exc:
        return fail(str(exc))


def _cmd_list(args: argparse.Namespace) -> int:
    from haptics.monitor import list_devices

    return list_devices(args.port, timeout_s=args.timeout, as_json=args.json)


def _cmd_monitor(args: argparse.Namespace) -> int:
    from haptics.device import DeviceError
    from haptics.monitor import monitor

    try:
        return monitor(args.port, seconds=args.seconds, plain=args.plain)
    except DeviceError as exc:
        return fail(str(exc))


def _cmd_bench_device(args: argparse.Namespace) -> int:
    from haptics.bench import print_json, run_device_bench
    from haptics.device import DeviceError

    if args.seconds <= 0:
        return fail("--seconds must be > 0")
    try:
        r = run_device_bench(args.seconds, rate_hz=args.rate, spin=not args.no_spin)
    except DeviceError as exc:
        return fail(str(exc))
    if args.json:
        print_json(r)
    else:
        print(f"STATE rate {r['state_rate_hz']} Hz, round trip p50 {r['rtt_p50_us']} us, "
              f"p99 {r['rtt_p99_us']} us, max {r['rtt_max_us']} us, frames lost "
              f"{r['frames_lost']}, CRC errors {r['crc_errors']}, "
              f"target {'met' if r['target_met'] else 'MISSED'}")
    return 0


def _cmd_bench_fuzz(args: argparse.Namespace) -> int:
    from haptics.bench import print_json, run_fuzz_soak

    if args.frames <= 0 or not 0.0 <= args.corrupt <= 1.0:
        return fail("--frames must be > 0 and --corrupt in [0, 1]")
    r = run_fuzz_soak(args.frames, corrupt=args.corrupt, seed=args.seed)
    if args.json:
        print_json(r)
    else:
        print(f"{r['frames']} frames ({r['corrupted']} corrupted): {r['exceptions']} exceptions, "
              f"{r['undetected_corruptions']} undetected corruptions, "
              f"{r['intact_lost_unexplained']} intact frames lost without cause, "
              f"{r['frames_per_s']} frames/s")
    return 0 if r["ok"] else 1


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add the haptics subcommands to the top-level parser `sub` and `bench` parser `bench_sub`."""
    from haptics.emulator_config import add_arguments

    d = sub.add_parser("device", help="haptic devices: emulator, port list, live monitor")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    e = dsub.add_parser("emulate", help="run a device emulator on a pty (prints the pty path)")
    add_arguments(e)
    e.set_defaults(func=_cmd_emulate)
    ls = dsub.add_parser("list", help="serial ports, with the INFO of each trocar device")
    ls.add_argument("--port", action="append", default=[],
                    help="also probe this path (e.g. an emulator pty); repeatable")
    ls.add_argument("--timeout", type=float, default=0.5, help="handshake timeout per port [s]")
    ls.add_argument("--json", action="store_true", help="one JSON object per port")
    ls.set_defaults(func=_cmd_list)
    m = dsub.add_parser("monitor", help="live rate, jitter, round trip, position, errors")
    m.add_argument("port", help="serial port or pty path")
    m.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    m.add_argument("--plain", action="store_true", help="one text line per second, no live view")
    m.set_defaults(func=_cmd_monitor)
    from haptics.calibrate_cli import add_arguments as add_calibration_arguments
    from haptics.calibrate_cli import cmd_calibrate, cmd_check

    cal = dsub.add_parser("calibrate", help="calibration wizard; writes the device's profile")
    chk = dsub.add_parser("check", help="re-verify the stored calibration profile of a device")
    add_calibration_arguments(cal, chk)
    cal.set_defaults(func=cmd_calibrate)
    chk.set_defaults(func=cmd_check)

    bd = bench_sub.add_parser("device", help="host <-> emulator link at 1 kHz over a pty")
    bd.add_argument("--seconds", type=float, default=10.0, help="run time [s] (default 10)")
    bd.add_argument("--rate", type=int, default=1000, help="host tick rate [Hz] (default 1000)")
    bd.add_argument("--no-spin", action="store_true",
                    help="sleep to each deadline instead of spinning the last 200 us")
    bd.add_argument("--json", action="store_true", help="JSON only")
    bd.set_defaults(func=_cmd_bench_device)
    bf = bench_sub.add_parser("device-fuzz", help="protocol decoder soak on corrupted frames")
    bf.add_argument("--frames", type=int, default=1_000_000, help="frames (default 1e6)")
    bf.add_argument("--corrupt", type=float, default=0.1, help="fraction damaged (default 0.1)")
    bf.add_argument("--seed", type=int, default=1)
    bf.add_argument("--json", action="store_true", help="JSON only")
    bf.set_defaults(func=_cmd_bench_fuzz)
