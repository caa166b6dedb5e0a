"""The console's web application: authentication, the dashboard and reports (this module), live
sessions (`console.live`) and review (`console.review`) mounted on one Starlette app.

Every page needs a login; trainees see only their own records and replays; live sessions are for
instructors. Every state-changing request carries the session's CSRF token (form field `csrf`).
Bad requests answer 4xx and change nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import accounts, live, review
from console.guard import (
    COOKIE,
    HERE,
    LOGIN_COOKIE,
    MAX_FORM_BYTES,
    checked_form,
    current_user,
    may_see_trainee,
    page_user,
    records,
    render,
    require_instructor,
    rules,
)


@dataclass
class Config:
    """What `trocar serve` runs with. records: records database path (None: default); users: the
    console's accounts database; rules: proficiency rules file; runtime: where shared sessions
    register (None: `sim.runtime.share.runtime_dir()`); recordings: folder of recordings reviewable
    by name; secure_cookies: set the Secure flag (behind TLS)."""

    records: str | None = None
    users: str | None = None
    rules: str | None = None
    runtime: str | None = None
    recordings: str | None = None
    secure_cookies: bool = False
    state: dict = field(default_factory=dict)


class Users:
    """The accounts database behind a lock (one SQLite connection shared by the worker threads)."""

    def __init__(self, path: str | None) -> None:
        self.conn = accounts.connect(path)
        self.lock = threading.Lock()

    def __getattr__(self, name):
        fn = getattr(accounts, name)

        def call(*args, **kw):
            with self.lock:
                return fn(self.conn, *args, **kw)

        return call


# ---------------------------------------------------------------------------- login

def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", None, csrf=token, error=request.query_params.get("error"))
    resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                    secure=request.app.state.config.secure_cookies)
    return resp


async def login_post(request: Request) -> Response:
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise HTTPException(413, "request too large")
    form = await request.form()
    want = request.cookies.get(LOGIN_COOKIE)
    if not want or not secrets.compare_digest(want, str(form.get("csrf", ""))):
        raise HTTPException(403, "bad or missing CSRF token")
    token = request.app.state.users.login(str(form.get("name", ""))[:64], str(form.get("password", ""))[:256])
    if token is None:
        return RedirectResponse("/login?error=1", status_code=303)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, max_age=accounts.SESSION_S, httponly=True, samesite="strict",
                    secure=request.app.state.config.secure_cookies)
    resp.delete_cookie(LOGIN_COOKIE)
    return resp


async def logout_post(request: Request) -> Response:
    user = current_user(request)
    await checked_form(request, user)
    request.app.state.users.logout(request.cookies.get(COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp


# ---------------------------------------------------------------------------- dashboard

def dashboard(request: Request) -> Response:
    from sim.errors import UserError
    from trainees.records import evaluate_all, list_trainees, query_attempts

    user = page_user(request)
    if isinstance(user, RedirectResponse):
        return user
    cohort = request.query_params.get("cohort") or None
    task = request.query_params.get("task") or None
    people, attempts, status, tasks, cohorts = [], [], {}, [], []
    try:
        conn = records(request)
    except UserError as exc:
        conn, error = None, str(exc)
    else:
        error = None
    if conn is not None:
        try:
            r = rules(request)
            tasks = [t.name for t in r.tasks]
            everyone = list_trainees(conn)
            cohorts = sorted({p["cohort"] for p in everyone if p["cohort"]})
            people = [p for p in everyone if may_see_trainee(user, p["id"])
                      and (cohort is None or p["cohort"] == cohort)]
            for p in people:
                status[p["id"]] = evaluate_all(conn, r, p["id"])
            ids = {p["id"] for p in people}
            attempts = [a for a in query_attempts(conn, procedure=task, cohort=cohort) if a.trainee_id in ids]
            attempts.reverse()
        finally:
            conn.close()
    if user.instructor:
        sessions = live.shared_sessions(request)
    else:
        sessions = []
    return render(request, "dashboard.html", user, people=people, attempts=attempts[:200], status=status,
                  tasks=tasks, cohorts=cohorts, cohort=cohort, task=task, error=error, live=sessions)


def trainee_report(request: Request) -> Response:
    from sim.errors import UserError
    from trainees.report import trainee_report as build

    user = current_user(request)
    tid = request.path_params["trainee"]
    if not may_see_trainee(user, tid):
        raise HTTPException(403, "not your record")
    conn = records(request)
    try:
        html = build(conn, rules(request), tid)
    except UserError as exc:
        raise HTTPException(404, str(exc)) from None
    finally:
        conn.close()
    return HTMLResponse(html)


def cohort_report(request: Request) -> Response:
    from sim.errors import UserError
    from trainees.report import cohort_report as build

    user = current_user(request)
    require_instructor(user)
    conn = records(request)
    try:
        html = build(conn, rules(request), request.path_params["cohort"])
    except UserError as exc:
        raise HTTPException(404, str(exc)) from None
    finally:
        conn.close()
    return HTMLResponse(html)


async def http_error(request: Request, exc: HTTPException) -> Response:
    return HTMLResponse(f"<!doctype html><title>{exc.status_code}</title><p>{exc.status_code}: "
                        f"{_escape(str(exc.detail))}</p>", status_code=exc.status_code)


def _escape(s: str) -> str:
    import html

    return html.escape(s)


def create_app(config: Config) -> Starlette:
    """The console application for `config`."""
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout_post, methods=["POST"]),
        Route("/", dashboard),
        Route("/trainee/{trainee}/report", trainee_report),
        Route("/cohort/{cohort}/report", cohort_report),
        *live.routes(),
        *review.routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        live.close(app)
        review.close(app)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.config = config
    app.state.users = Users(config.users)
    return app
