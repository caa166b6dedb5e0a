# Two commands a user needs: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean render-deps lrs-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "trocar needs Python >= 3.11, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/trocar run peg_transfer --policy expert

# System packages for the render tests (Mesa EGL/GLX, Xvfb, mmdebstrap) and the cached Debian trixie
# root with Monado for the OpenXR test. Both scripts are idempotent (a second run is a no-op) and need
# root; without it they say so in one line and the EGL/XR tests skip (under CI=true they fail).
render-deps: $(STAMP)
	@bash scripts/setup-render-deps.sh
	@if [ "$$(id -u)" -eq 0 ]; then PYTHON=$(PY) bash scripts/xr-root.sh || echo "render deps: could not build the Monado root (.xr-root); the OpenXR test will report why"; \
	 else echo "render deps: not root; skipping the Monado root (.xr-root); the OpenXR test will skip"; fi

# Ralph, a Learning Record Store, in its own .venv-lrs for the xAPI export test (its pins are its own).
lrs-deps: $(STAMP)
	@PYTHON=$(PY) bash scripts/setup-lrs.sh

test: $(STAMP) render-deps lrs-deps
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/trocar bench tissue --tets 5000 --steps 2000 --peer pybullet --json

clean:
	rm -rf $(VENV) .venv-lrs build *.egg-info
