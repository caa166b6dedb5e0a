#!/usr/bin/env bash
# Inside the trixie root (started by scripts/xr-run.sh): Xvfb on a free display number (Xvfb picks
# it, -displayfd), then monado-service with the null compositor, the simulated HMD and two
# simulated WinMR controllers (left and right hand), then the command. Logs go to /xrdata. Children
# are stopped by PID on the way out (and the PID namespace reaps anything left).
set -uo pipefail
export XDG_RUNTIME_DIR=/tmp/xdg-runtime
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
export PYTHONDONTWRITEBYTECODE=1
export XR_RUNTIME_JSON=/usr/share/openxr/1/openxr_monado.json
# The host's settings mean nothing here (the EGL platform, the host's paths).
unset PYOPENGL_PLATFORM PYTHONPATH VIRTUAL_ENV
XVFB_PID=""; MONADO_PID=""
cleanup() {
    [ -n "$MONADO_PID" ] && kill -TERM "$MONADO_PID" 2>/dev/null && wait "$MONADO_PID" 2>/dev/null
    [ -n "$XVFB_PID" ] && kill -TERM "$XVFB_PID" 2>/dev/null && wait "$XVFB_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT

# A free display number: X servers on the host (or in other roots) share the abstract socket
# namespace with this one, so no number is assumed; Xvfb tries them and writes the one it got.
Xvfb -displayfd 3 -screen 0 1280x1024x24 -nolisten tcp 3>/tmp/xvfb.display >/xrdata/xvfb.log 2>&1 &
XVFB_PID=$!
for _ in $(seq 1 300); do grep -q '^[0-9]' /tmp/xvfb.display 2>/dev/null && break; sleep 0.1; done
n="$(head -n1 /tmp/xvfb.display 2>/dev/null | tr -dc 0-9)"
[ -n "$n" ] || { echo "xr-inside: Xvfb did not start; log:" >&2; tail -n 5 /xrdata/xvfb.log >&2; exit 4; }
export DISPLAY=":$n"
echo "$DISPLAY" > /xrdata/display

XRT_COMPOSITOR_NULL=1 SIMULATED_ENABLE=1 SIMULATED_LEFT=wmr SIMULATED_RIGHT=wmr XRT_NO_STDIN=1 \
    monado-service >/xrdata/monado.log 2>&1 &
MONADO_PID=$!
for _ in $(seq 1 600); do [ -S "$XDG_RUNTIME_DIR/monado_comp_ipc" ] && break; sleep 0.1; done
if [ ! -S "$XDG_RUNTIME_DIR/monado_comp_ipc" ]; then
    echo "xr-inside: monado-service did not open its socket; log:" >&2
    tail -n 20 /xrdata/monado.log >&2
    exit 4
fi

cd /trocar
if [ $# -eq 0 ]; then
    set -- /opt/trocar-venv/bin/python -c 'import xr; print(xr.get_instance_properties(xr.create_instance(xr.InstanceCreateInfo())).runtime_name)'
fi
"$@"
