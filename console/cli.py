"""`trocar serve` (the instructor console), `trocar console-user` (its accounts) and
`trocar bench console` (spectator load). Registered by sim.cli."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from sim.errors import UserError


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("TROCAR_CONSOLE_PASSWORD"):
        return os.environ["TROCAR_CONSOLE_PASSWORD"]
    import getpass

    return getpass.getpass(f"password for {args.name}: ")


def _cmd_user(args: argparse.Namespace) -> int:
    from console import accounts

    conn = accounts.connect(args.users)
    if args.action == "add":
        if not args.name or not args.role:
            raise UserError("console-user add needs NAME and --role instructor|trainee")
        accounts.add_user(conn, args.name, _password(args), args.role, args.trainee)
        print(f"user {args.name} ({args.role}) added")
    elif args.action == "remove":
        accounts.remove_user(conn, args.name or "")
        print(f"user {args.name} removed")
    else:
        for u in accounts.list_users(conn):
            print(f"{u.name}\t{u.role}\t{u.trainee_id or ''}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from console.app import Config, create_app

    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        if args.host != "localhost":
            raise UserError(f"--host must be an IP address, not {args.host!r}") from None
    if not 0 < args.port < 65536:
        raise UserError("--port must be 1..65535")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise UserError("--ssl-certfile and --ssl-keyfile go together")
    for f in (args.ssl_certfile, args.ssl_keyfile):
        if f and not os.path.isfile(f):
            raise UserError(f"no such file: {f}")
    if args.recordings and not os.path.isdir(args.recordings):
        raise UserError(f"--recordings: no such directory: {args.recordings}")
    app = create_app(Config(records=args.db, users=args.users, rules=args.rules, runtime=args.runtime_dir,
                            recordings=args.recordings,
                            secure_cookies=bool(args.ssl_certfile) or args.behind_tls))
    scheme = "https" if args.ssl_certfile else "http"
    print(f"trocar serve: {scheme}://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws_max_size=64 * 1024,
                ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                proxy_headers=args.behind_tls, forwarded_allow_ips="127.0.0.1" if args.behind_tls else None)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from console.bench import run

    return run(args)


def register(sub: argparse._SubParsersAction, bsub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="the instructor console (web): live sessions, records, review")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    s.add_argument("--db", help="records database (default $XDG_DATA_HOME/trocar/records.sqlite3)")
    s.add_argument("--users",
                   help="console accounts database (default $XDG_DATA_HOME/trocar/console.sqlite3)")
    s.add_argument("--rules", help="proficiency rules TOML (default: the packaged rules)")
    s.add_argument("--runtime-dir", help="where shared sessions register (default: sim.runtime.share)")
    s.add_argument("--recordings", help="folder whose recordings may be reviewed by file name")
    s.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--ssl-keyfile", help="... and this private key (PEM)")
    s.add_argument("--behind-tls", action="store_true",
                   help="a TLS reverse proxy on this machine forwards to us: Secure cookies, X-Forwarded-*")
    s.set_defaults(func=_cmd_serve)
    u = sub.add_parser("console-user", help="console accounts: add, list, remove")
    u.add_argument("action", choices=["add", "list", "remove"])
    u.add_argument("name", nargs="?")
    u.add_argument("--role", choices=["instructor", "trainee"])
    u.add_argument("--trainee", help="trainee id whose records a trainee account sees")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    u.add_argument("--users", help="console accounts database")
    u.set_defaults(func=_cmd_user)
    b = bsub.add_parser("console", help="servo period with N stream spectators vs none; stream fps, latency")
    b.add_argument("--spectators", type=int, default=20, help="WebSocket spectators (default 20)")
    b.add_argument("--seconds", type=float, default=10.0, help="seconds per case (default 10)")
    b.add_argument("--scene", default="peg_transfer", help="task or scene of the session")
    b.add_argument("--json", action="store_true", help="JSON only")
    b.set_defaults(func=_cmd_bench)
