#!/usr/bin/env bash
# Build (once) the Debian trixie root that runs the OpenXR test against a real Monado runtime.
#
# Monado ships in trixie but its binaries need a newer glibc than bookworm's, so the headset display
# of a session (sim/render/xr_client.py, started by sim/render/xr_root.py through scripts/xr-run.sh;
# tests/render/test_xr.py) runs inside this root while the session's servo runs on the host. The
# root holds monado-service, Mesa (GLX on Xvfb for the client, lavapipe for Monado), Xvfb, Debian's
# numpy and Pillow, and a venv at /opt/trocar-venv with pyopenxr, glfw and PyOpenGL; the project
# tree is bind-mounted at /trocar and put on the venv's path by a .pth file, so the root never goes
# stale when the code changes. VERSION 2: + python3-pil (the HUD's text).
#
# Usage: scripts/xr-root.sh [DIR]   (default .xr-root; the root is DIR/root)
# Idempotent: an existing complete root (stamp DIR/root/.trocar-xr-root matching this script's
# version) is reused. Needs root. The Debian mirror is the one the host's own apt sources use.
set -euo pipefail

VERSION=2
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${1:-$HERE/.xr-root}")"
ROOT="$DIR/root"
STAMP="$ROOT/.trocar-xr-root"
PY="${PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "xr-root: needs root (mmdebstrap --mode=root, chroot)" >&2
    exit 1
fi
command -v mmdebstrap >/dev/null || { echo "xr-root: mmdebstrap missing (run scripts/setup-render-deps.sh)" >&2; exit 1; }

# The Debian mirror from the host's apt sources (deb822 .sources or one-line .list); the main
# archive, not security or third-party repositories.
mirror_from_host() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN{IGNORECASE=1} /^URIs:/{for(i=2;i<=NF;i++) print $i}' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; break}}' "$f"
    done
}
MIRROR="$(mirror_from_host | grep -E '/debian/?$' | grep -v -i security | head -n1 || true)"
if [ -z "$MIRROR" ]; then
    echo "xr-root: no Debian mirror found in /etc/apt/sources.list(.d)" >&2
    exit 1
fi

start=$(date +%s)
echo "xr-root: building trixie root in $ROOT from $MIRROR"
rm -rf "$ROOT" "$DIR/root.partial"
mkdir -p "$DIR"
mmdebstrap --quiet --variant=apt --mode=root \
    --include=monado-service,libopenxr1-monado,mesa-vulkan-drivers,libgl1-mesa-dri,libglx-mesa0,libegl-mesa0,xvfb,xauth,python3-venv,python3-numpy,python3-pil,ca-certificates \
    trixie "$DIR/root.partial" "$MIRROR"

# Python packages for the client: downloaded here with the host's pip (and its configuration), then
# installed offline in the root, so the root needs no network or certificates of its own.
WHEELS="$DIR/root.partial/opt/wheels"
mkdir -p "$WHEELS"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
    "pyopenxr>=1.1.6501" "glfw>=2.10" "PyOpenGL>=3.1.10"
chroot "$DIR/root.partial" python3 -m venv --system-site-packages /opt/trocar-venv
chroot "$DIR/root.partial" /opt/trocar-venv/bin/pip install --quiet --no-index --no-deps \
    --find-links /opt/wheels pyopenxr glfw PyOpenGL
site="$(chroot "$DIR/root.partial" /opt/trocar-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo /trocar > "$DIR/root.partial$site/trocar.pth"
mkdir -p "$DIR/root.partial/trocar" "$DIR/root.partial/xrdata"
echo "$VERSION" > "$DIR/root.partial/.trocar-xr-root"
mv "$DIR/root.partial" "$ROOT"
echo "xr-root: done in $(( $(date +%s) - start )) s, $(du -sh "$ROOT" | cut -f1)"
