#!/usr/bin/env bash
# A Learning Record Store for the xAPI export test: Ralph (PyPI ralph-malph) in its own virtualenv,
# .venv-lrs, because its FastAPI/pydantic pins are not ours to impose on the main environment.
# Idempotent: does nothing when the pinned version is already installed.
# Ralph 5.1.0 imports `requests` (OIDC auth) without declaring it, hence the extra package.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-lrs
RALPH="ralph-malph[cli,lrs]==5.1.0"
STAMP="$VENV/.ralph-5.1.0"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import ralph.cli, uvicorn, requests" 2>/dev/null; then
    exit 0
fi
echo "lrs deps: installing Ralph into $VENV"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$RALPH" "requests>=2.31"
touch "$STAMP"
