"""Tet mesh files: `load_mesh` and `save_mesh` through meshio (VTK .vtu/.vtk, Gmsh .msh).

This module owns the translation between meshio's cell blocks and a validated `TetMesh`, and turns
every way a file can be unusable into one `MeshError` line naming the file and the problem.

Lower-dimensional cells (vertices, lines, triangles, quads and their higher-order variants) are
ignored: Gmsh writes boundary triangles, edges and geometry points next to the tetrahedra. Nodes
used only by those cells (e.g. geometry points, or mesh nodes of embedded curves) are dropped and
the tets renumbered, so a file with such cells loads even though some of its nodes touch no tet. A
file with tetrahedra only must use every node: an unreferenced node there is reported as an error,
because it points at a broken export rather than at boundary bookkeeping.

meshio reports some problems by printing (to stdout and, through rich, to stderr) and a failed VTU
parse even calls `sys.exit(1)`. Reading and writing therefore run with both streams captured and
warnings silenced; on success the captured text is discarded (stderr stays clean), on failure its
last line becomes the detail of the `MeshError`. The capture swaps `sys.stdout`/`sys.stderr`, so
do not call these from several threads at once.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import meshio
import numpy as np

from sim.mesh import MeshError, TetMesh, validate

# Formats `save_mesh` writes, by suffix; meshio's writer names.
WRITE_FORMATS = {".vtu": "vtu", ".vtk": "vtk", ".msh": "gmsh"}


@contextlib.contextmanager
def _quiet():
    """Capture stdout/stderr and warnings; yields the buffer that collects both streams."""
    buf = io.StringIO()
    with (warnings.catch_warnings(), contextlib.redirect_stdout(buf),
          contextlib.redirect_stderr(buf)):
        warnings.simplefilter("ignore")
        yield buf


def _one_line(text: str, limit: int = 160) -> str:
    """Collapse `text` to one line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read(path: Path) -> meshio.Mesh:
    """meshio.read with every failure (including its sys.exit) turned into a MeshError."""
    if not path.exists():
        raise MeshError(f"{path}: file not found")
    if path.is_dir():
        raise MeshError(f"{path}: is a directory, not a mesh file")
    if path.stat().st_size == 0:
        raise MeshError(f"{path}: empty file (0 bytes)")
    suffixes = ["".join(path.suffixes[i:]).lower() for i in range(len(path.suffixes))]
    if not any(s in meshio.extension_to_filetypes for s in suffixes):
        raise MeshError(f"{path}: unknown mesh format '{path.suffix}' "
                        f"(use .vtu, .vtk or .msh)")
    with _quiet() as log:
        try:
            return meshio.read(path)
        except SystemExit:
            # meshio printed the reader's reason (if any), then "Couldn't read file ..." and exited.
            said = [ln for ln in log.getvalue().splitlines()
                    if ln.strip() and "Couldn't read file" not in ln]
            detail = said[-1] if said else f"not a valid {path.suffix.lstrip('.')} file"
        except UnicodeDecodeError:
            detail = "binary garbage where text was expected"
        except Exception as exc:  # meshio readers raise anything from ValueError to struct.error
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    raise MeshError(f"{path}: unreadable mesh file ({_one_line(detail)})")


def _tetra(raw: meshio.Mesh, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) and tets (m, 4) int64 of `raw`, minus nodes that only lower-dim cells use."""
    points = np.asarray(raw.points)
    if points.shape[0] == 0 and not any(len(b.data) for b in raw.cells):
        raise MeshError(f"{source}: empty mesh (no nodes, no cells)")
    if points.ndim != 2 or points.shape[1] != 3:
        raise MeshError(f"{source}: nodes must be 3-D, got points of shape {points.shape}")
    found = sorted({b.type for b in raw.cells if len(b.data)})
    other_volume = sorted({b.type for b in raw.cells if b.dim == 3 and b.type != "tetra"})
    tet_blocks = [np.asarray(b.data, dtype=np.int64) for b in raw.cells
                  if b.type == "tetra" and len(b.data)]
    if not tet_blocks:
        kinds = ", ".join(found) if found else "none"
        raise MeshError(f"{source}: no tetrahedra (cell types found: {kinds}); "
                        f"only linear 'tetra' cells can be simulated")
    if other_volume:
        raise MeshError(f"{source}: wrong cell type: {', '.join(other_volume)} next to tetra; "
                        f"only linear 'tetra' volume cells are supported")
    tets = np.concatenate(tet_blocks)
    lower_dim = any(b.dim < 3 and len(b.data) for b in raw.cells)
    # Out-of-range indices are left for validate() to report rather than crash the renumbering.
    if lower_dim and tets.size and 0 <= tets.min() and tets.max() < points.shape[0]:
        used, tets = np.unique(tets, return_inverse=True)
        points, tets = points[used], tets.reshape(-1, 4)
    return points, tets


def load_mesh(path: str | os.PathLike) -> TetMesh:
    """Read a tet mesh file (any meshio format; .vtu, .vtk and .msh are tested) into a `TetMesh`.

    Returns a validated mesh: points [m] (n, 3) float64, tets (m, 4) int32 positively oriented.
    Raises `MeshError` (one line: file name and problem) for a missing, unreadable or
    unknown-format file, no tetra cells, other volume cell types, an empty mesh, NaN/inf
    coordinates, degenerate or inverted tets, and unused nodes (see module docstring).
    """
    path = Path(path)
    points, tets = _tetra(_read(path), str(path))
    return validate(TetMesh(points, tets), source=str(path))


def save_mesh(path: str | os.PathLike, mesh: TetMesh) -> None:
    """Write `mesh` (validated first) to `path`: .vtu / .vtk (binary VTK) or .msh (Gmsh 4.1 binary).

    Points [m] are written as float64 and read back bit-equal by `load_mesh`. The file is written
    to a temporary sibling and renamed, so a failed write leaves no partial file. Raises
    `MeshError` for an unsupported suffix, an invalid mesh or an OS error.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MeshError(f"{path}: cannot write '{path.suffix}' files (use .vtu, .vtk or .msh)")
    mesh = validate(mesh, source=str(path))
    cell_data = {}
    if fmt == "gmsh":
        # Without tags meshio pads them and prints a warning; volume entity 1, physical group 1.
        ones = np.ones(mesh.tet_count, dtype=np.int32)
        cell_data = {"gmsh:physical": [ones], "gmsh:geometrical": [ones]}
    out = meshio.Mesh(mesh.points, [("tetra", mesh.tets)], cell_data=cell_data)
    # A hidden sibling keeps the rename on one file system; its name keeps the suffix for meshio.
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp{path.suffix}"
    try:
        with _quiet() as log:
            try:
                meshio.write(tmp, out, file_format=fmt)
            except OSError:
                raise
            except Exception as exc:
                detail = _one_line(str(exc) or log.getvalue())
                raise MeshError(f"{path}: cannot write ({detail})") from exc
        os.replace(tmp, path)
    except OSError as exc:
        raise MeshError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
