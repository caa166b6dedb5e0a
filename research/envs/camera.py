"""Camera observations of an environment: the laparoscope's view through EGL (`HeadlessView`),
as colour, depth and a point cloud.

rgb: uint8 (height, width, 3). depth: distance along the scope's view axis [m], float32
(height, width, 1); pixels where nothing was drawn read the far plane's distance. points: the world
position [m] of each pixel, float32 (height, width, 3) (far-plane pixels lie on the far plane).
Depth and points come from the depth buffer unprojected through the camera's own projection.
"""

from __future__ import annotations

import numpy as np


class CameraObs:
    """One EGL view of a scene's laparoscope at width x height pixels; `close()` frees it."""

    def __init__(self, scene, width: int, height: int) -> None:
        from sim.render.offscreen import HeadlessView

        self.scene = scene
        self.width, self.height = int(width), int(height)
        self.view = HeadlessView(scene.describe(), self.width, self.height)
        ys, xs = np.mgrid[0:self.height, 0:self.width]
        # NDC of pixel centres, top row first (the readbacks flip rows to top-first)
        self._ndc_x = ((xs + 0.5) / self.width * 2.0 - 1.0).ravel()
        self._ndc_y = (1.0 - (ys + 0.5) / self.height * 2.0).ravel()

    def observe(self, snapshot: dict, *, depth: bool = False, points: bool = False) -> dict:
        """{'rgb'} plus 'depth' and/or 'points' as asked (see the module docstring)."""
        cam = self.scene.scope
        out = {"rgb": self.view.render(snapshot, cam, hud=False)}
        if depth or points:
            win = self.view.depth().ravel().astype(np.float64)
            proj = cam.projection(self.width / self.height)
            ndc = np.stack([self._ndc_x, self._ndc_y, win * 2.0 - 1.0, np.ones_like(win)])
            eye = np.linalg.solve(proj, ndc)
            eye = eye[:3] / eye[3]
            if depth:
                out["depth"] = (-eye[2]).reshape(self.height, self.width, 1).astype(np.float32)
            if points:
                inv_view = np.linalg.inv(cam.view())
                world = inv_view[:3, :3] @ eye + inv_view[:3, 3:4]
                out["points"] = world.T.reshape(self.height, self.width, 3).astype(np.float32)
        return out

    def close(self) -> None:
        self.view.close()
