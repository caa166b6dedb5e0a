#!/usr/bin/env bash
# System packages the renderer and its tests need: Mesa (EGL surfaceless + llvmpipe, GLX for GLFW),
# Xvfb (the window tests' X server), mmdebstrap (builds the Debian trixie root that runs Monado,
# scripts/xr-root.sh), chromium (the records report is checked in a real headless browser), and the
# shared libraries gmsh's wheel links (the cholecystectomy's anatomy generator, sim/anatomy_mesh.py).
# Idempotent: installs only what is missing. Needs root (or passwordless sudo); without either it
# prints one line and exits 0, and the EGL/XR and report browser tests skip with that reason.
set -euo pipefail

PACKAGES=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglx-mesa0 libgles2 xvfb xauth mmdebstrap chromium
          libglu1-mesa libxcursor1 libxft2 libxinerama1 libxrender1 libfontconfig1 libgomp1)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "render deps: not root and no passwordless sudo; not installing ${missing[*]} (EGL/XR and report browser tests will skip)"
    exit 0
fi

echo "render deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q >/dev/null
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
