"""The instructor console, `trocar serve`: a web application (Starlette on uvicorn) to watch shared
sessions live, guide and pause them, browse trainees' records and replay stored attempts.

Modules: accounts (users, password hashes, login sessions, CSRF), app (the routes), stream (the
console's own renderer process per live session and the frame hub), review (replaying a recording
into frames on demand), cli (`trocar serve`, `trocar console-user`, `trocar bench console`).
"""
