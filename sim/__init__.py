"""trocar simulation core: tissue physics (Numba), meshes, scene, CLI.

Importing it points Numba's on-disk cache (`cache=True` kernels) at a directory named by a hash
of the kernels' source files, unless NUMBA_CACHE_DIR is already set. Numba keys a cached kernel on
its own file only, so a kernel that inlines a function from another file (`sim.tissue_solver`
inlines `sim.tissue_elements` and `sim.tissue_tethers`) kept running stale machine code after
that file changed: a checkout that pulled the fix for neo-Hookean dead elements still turned
NaN until the cache was deleted by hand.
"""

import hashlib
import os
import pathlib


def _numba_cache_dir() -> str:
    here = pathlib.Path(__file__).parent
    digest = hashlib.sha1()
    for path in sorted(here.glob("*.py")):
        text = path.read_bytes()
        if b"njit" in text:
            digest.update(path.name.encode() + b"\0" + text)
    return str(here / "__pycache__" / f"numba-{digest.hexdigest()[:12]}")


os.environ.setdefault("NUMBA_CACHE_DIR", _numba_cache_dir())
