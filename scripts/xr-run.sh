#!/usr/bin/env bash
# Run a command inside the trixie root (scripts/xr-root.sh) with Xvfb and monado-service started.
#
# Usage: scripts/xr-run.sh ROOT DATA_DIR [COMMAND...]
#   ROOT: the root built by xr-root.sh (DIR/root); DATA_DIR: a host directory seen as /xrdata inside.
#   COMMAND runs in the root with DISPLAY, XDG_RUNTIME_DIR and XR_RUNTIME_JSON set, the project tree
#   bind-mounted read-only at /trocar, and the host's /dev/shm (the session's snapshot and input
#   mailboxes: the headset display in the root reads and writes them); default: a Monado smoke check.
# Everything runs in fresh mount and PID namespaces: the mounts vanish and every process in the root
# (Xvfb, monado-service, the client) is killed when this script ends, whatever way it ends.
set -euo pipefail
ROOT="$(realpath "$1")"
DATA="$(realpath "$2")"
shift 2
PROJECT="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$ROOT/.trocar-xr-root" ] || { echo "xr-run: $ROOT is not a root built by scripts/xr-root.sh" >&2; exit 1; }

exec unshare --mount --pid --fork --kill-child=SIGKILL --propagation private -- \
    /bin/bash -c '
set -euo pipefail
ROOT="$1"; DATA="$2"; PROJECT="$3"; shift 3
mount --bind "$PROJECT" "$ROOT/trocar"
mount -o remount,bind,ro "$ROOT/trocar"
mount --bind "$DATA" "$ROOT/xrdata"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys" || true
mount --rbind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
mount --bind /dev/shm "$ROOT/dev/shm"
exec chroot "$ROOT" /bin/bash /trocar/scripts/xr-inside.sh "$@"
' xr-run "$ROOT" "$DATA" "$PROJECT" "$@"
