"""Live sessions in the console: the list of shared sessions, the watch page, the frame WebSocket
and the instructor's controls (message, mark, pause) written into the session's guide channel.

Instructors only. A session is named by its registration id (`sim.runtime.share`); ids are checked
against the registrations, never used to build a path.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from console.guard import COOKIE, checked_form, current_user, page_user, render, require_instructor
from sim.runtime.share import MESSAGE_BYTES, GuideChannel, list_sessions

_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{1,10}$")


def _folder(app) -> Path | None:
    return Path(app.state.config.runtime) if app.state.config.runtime else None


def shared_sessions(request: Request) -> list[dict]:
    return list_sessions(_folder(request.app))


def _session(app, sid: str) -> dict:
    if not _ID.match(sid):
        raise HTTPException(404, "no such session")
    for reg in list_sessions(_folder(app)):
        if reg.get("id") == sid:
            return reg
    raise HTTPException(404, "no such session (it may have ended)")


def _guide(app, reg: dict) -> GuideChannel:
    guides = app.state.config.state.setdefault("guides", {})
    g = guides.get(reg["id"])
    if g is None:
        try:
            g = guides[reg["id"]] = GuideChannel.attach(reg["guide"])
        except (FileNotFoundError, ValueError):
            raise HTTPException(404, "the session has ended") from None
    return g


def _hub(app):
    from console.stream import StreamHub

    return app.state.config.state.setdefault("hub", StreamHub())


def watch_page(request: Request) -> Response:
    user = page_user(request)
    if isinstance(user, RedirectResponse):
        return user
    require_instructor(user)
    reg = _session(request.app, request.path_params["sid"])
    return render(request, "live.html", user, reg=reg, max_message=MESSAGE_BYTES)


async def message_post(request: Request) -> Response:
    user = current_user(request)
    require_instructor(user)
    form = await checked_form(request, user)
    reg = _session(request.app, request.path_params["sid"])
    text = str(form.get("text", "")).strip()
    if not text or len(text.encode()) > MESSAGE_BYTES:
        raise HTTPException(400, f"a message is 1 to {MESSAGE_BYTES} bytes")
    return JSONResponse({"message_id": _guide(request.app, reg).send_message(text)})


async def mark_post(request: Request) -> Response:
    user = current_user(request)
    require_instructor(user)
    form = await checked_form(request, user)
    reg = _session(request.app, request.path_params["sid"])
    try:
        x, y = float(form.get("x", "")), float(form.get("y", ""))
        mark_id = _guide(request.app, reg).send_mark(x, y)
    except ValueError:
        raise HTTPException(400, "a mark needs x and y in [0, 1]") from None
    return JSONResponse({"mark_id": mark_id})


async def pause_post(request: Request) -> Response:
    user = current_user(request)
    require_instructor(user)
    form = await checked_form(request, user)
    reg = _session(request.app, request.path_params["sid"])
    if form.get("paused") not in ("0", "1"):
        raise HTTPException(400, "paused is 0 or 1")
    _guide(request.app, reg).set_paused(form["paused"] == "1")
    return JSONResponse({"paused": form["paused"] == "1"})


def stats(request: Request) -> Response:
    user = current_user(request)
    require_instructor(user)
    reg = _session(request.app, request.path_params["sid"])
    s = _hub(request.app).streams.get(reg["id"])
    return JSONResponse(s.stats() if s is not None else {"fps": 0.0, "spectators": 0})


async def frames_ws(ws: WebSocket) -> None:
    """Frames to one spectator; the page answers 'ack ID' for each frame it has drawn."""
    user = ws.app.state.users.session_user(ws.cookies.get(COOKIE))
    origin = ws.headers.get("origin")
    host = ws.headers.get("host")
    if user is None or not user.instructor or (origin and origin.split("://", 1)[-1] != host):
        await ws.close(code=1008)  # policy violation: no login, not an instructor, another site
        return
    try:
        reg = _session(ws.app, ws.path_params["sid"])
    except HTTPException:
        await ws.close(code=1008)
        return
    await ws.accept()
    hub = _hub(ws.app)
    stream = hub.join(reg)

    async def acks() -> None:
        while True:
            msg = await ws.receive_text()
            if len(msg) < 32 and msg.startswith("ack "):
                try:
                    stream.acknowledge(int(msg[4:]))
                except ValueError:
                    pass

    reader = asyncio.create_task(acks())
    last = 0
    try:
        while not reader.done():
            frame = await stream.next_frame(last)
            if frame is None:
                if stream.ended:
                    break
                continue
            last = frame[0]
            await ws.send_bytes(frame[1])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        hub.leave(stream)
        try:
            await ws.close()
        except (RuntimeError, WebSocketDisconnect):  # the page has gone already
            pass


def routes() -> list:
    return [
        Route("/live/{sid}", watch_page),
        Route("/live/{sid}/message", message_post, methods=["POST"]),
        Route("/live/{sid}/mark", mark_post, methods=["POST"]),
        Route("/live/{sid}/pause", pause_post, methods=["POST"]),
        Route("/live/{sid}/stats", stats),
        WebSocketRoute("/live/{sid}/ws", frames_ws),
    ]


def close(app) -> None:
    state = app.state.config.state
    hub = state.pop("hub", None)
    if hub is not None:
        hub.close()
    for g in state.pop("guides", {}).values():
        g.close()
