"""Rendering: one OpenGL 3.3 core renderer drawn three ways (docs/rendering.md).

| module | owns |
|---|---|
| `geometry` | pure NumPy: poses, matrices, primitive meshes, tissue vertex normals |
| (`sim.camera`) | the laparoscope camera maths, shared with the scene (`scene.scope`) |
| `hud` | HUD state (forces, warnings, out of view) and its 2D quads, pure NumPy |
| `gl_renderer` | `Renderer`: GL resources, shaders, draws a snapshot for a view |
| `egl` | headless EGL context (surfaceless Mesa) + FBO readback |
| `window` | GLFW desktop window, keyboard/mouse tool control |
| `xr` | OpenXR session (pyopenxr, XR_KHR_opengl_enable), stereo frame loop |
| `offscreen` | `trocar render`: scripted motion, PNG/video frames |
| `process` | `render_main`: the runtime's render process entry point |

Only `gl_renderer`, `egl`, `window` and `xr` import OpenGL; they do it lazily so that the choice of
PyOpenGL platform (EGL vs GLX) is made before the first import.
"""
