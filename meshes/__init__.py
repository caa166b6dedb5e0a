"""Small mesh and instrument assets; generated meshes are preferred over stored ones."""
