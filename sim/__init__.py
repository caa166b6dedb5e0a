"""trocar simulation core: tissue physics (Numba), meshes, scene, CLI."""
