"""Request guards shared by the console's routes: who is asking (the session cookie), CSRF and
size checks on forms, who may see which trainee, and page rendering."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.templating import Jinja2Templates

from console import accounts

HERE = Path(__file__).parent
COOKIE = "trocar_session"
LOGIN_COOKIE = "trocar_login"
MAX_FORM_BYTES = 4096  # no console form needs more (a message is at most 280 bytes)
templates = Jinja2Templates(directory=str(HERE / "templates"))


def current_user(request: Request) -> accounts.User:
    """The logged-in user, else 401 (pages redirect to /login instead: see `page_user`)."""
    user = request.app.state.users.session_user(request.cookies.get(COOKIE))
    if user is None:
        raise HTTPException(401, "log in first")
    return user


def page_user(request: Request) -> accounts.User | RedirectResponse:
    user = request.app.state.users.session_user(request.cookies.get(COOKIE))
    return user if user is not None else RedirectResponse("/login", status_code=303)


async def checked_form(request: Request, user: accounts.User) -> dict:
    """The request's form if small and carrying the user's CSRF token; else 413/403."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise HTTPException(413, "request too large")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "request too large")
    form = await request.form()
    if not accounts.csrf_ok(user, form.get("csrf")):
        raise HTTPException(403, "bad or missing CSRF token")
    return dict(form)


def require_instructor(user: accounts.User) -> None:
    if not user.instructor:
        raise HTTPException(403, "instructors only")


def may_see_trainee(user: accounts.User, trainee_id: str) -> bool:
    return user.instructor or user.trainee_id == trainee_id


def records(request: Request):
    from trainees.db import connect

    return connect(request.app.state.config.records, create=False)


def rules(request: Request):
    from trainees.rules import load_rules

    return load_rules(request.app.state.config.rules)


def render(request: Request, name: str, user: accounts.User | None, **ctx) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": user, **ctx})
