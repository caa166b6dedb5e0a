"""GLSL sources of the renderer (OpenGL 3.3 core) and the program compiler.

- `MESH_VS` / `MESH_FS`: lit meshes in the sim world frame. Blinn-Phong with a tight specular lobe
  plus a broad sheen (the wet look of serosa), lit by a spot light (the scope's light cable) with
  distance falloff, a little ambient and a dim room light for outside views. Shadows: the fragment
  is projected into the light's shadow map (`u_light_vp`) and the spot light's diffuse and
  specular terms are scaled by the lit fraction: one hardware-filtered depth compare (a 2x2
  percentage-closer filter in the texture unit; four shader taps cost llvmpipe ~10 % more per frame
  for an edge nobody sees at 960 px). The material (colour, shininess, specular, sheen) is a vertex
  attribute (`sim.render.gl_objects`): per vertex in a merged static batch, one value per draw
  otherwise. A clipping plane `u_clip` (world plane a x + b y + c z + d; geometry at negative
  distance is clipped through `gl_ClipDistance`; (0, 0, 0, 1) keeps everything) cuts the scene
  open in the anatomy explorer.
- `DEPTH_VS` / `DEPTH_FS`: the shadow map pass (depth only; also clipped).
- `HUD_VS` / `HUD_FS`: 2D coloured quads in pixels.
- `TEX_VS` / `TEX_FS`: an unlit textured quad (the operating-room monitor).
"""

from __future__ import annotations

from OpenGL import GL

MESH_VS = """#version 330 core
layout(location = 0) in vec3 a_pos;
layout(location = 1) in vec3 a_normal;
layout(location = 2) in vec3 a_colour;    // per vertex in a merged batch, else one value per draw
layout(location = 3) in vec3 a_finish;    // (shininess, specular, sheen), likewise
uniform mat4 u_model;
uniform mat4 u_view_proj;
uniform mat3 u_normal_mat;
uniform vec4 u_clip;         // world clipping plane; keep where dot(plane, (x, 1)) >= 0
uniform mat4 u_light_vp;
out vec4 v_light;
out vec3 v_world;
out vec3 v_normal;
flat out vec3 v_colour;
flat out vec3 v_finish;
void main() {
    vec4 w = u_model * vec4(a_pos, 1.0);
    v_world = w.xyz;
    v_normal = u_normal_mat * a_normal;
    v_colour = a_colour;
    v_finish = a_finish;
    // A clip distance, not a discard in the fragment shader: a shader that can discard turns off
    // the rasteriser's early depth test, and llvmpipe then shades every hidden fragment.
    gl_ClipDistance[0] = dot(u_clip, w);
    gl_Position = u_view_proj * w;
    v_light = u_light_vp * w;
}
"""

MESH_FS = """#version 330 core
in vec3 v_world;
in vec3 v_normal;
in vec4 v_light;
flat in vec3 v_colour;
flat in vec3 v_finish;       // tight specular exponent, tight lobe strength, broad wet sheen strength
uniform vec3 u_eye;
uniform vec3 u_light_pos;    // scope light
uniform vec3 u_light_dir;    // scope view direction
uniform float u_light_range; // distance at which the light falls to half [m]
uniform float u_light_power;
uniform float u_ambient;
uniform vec3 u_room_dir;     // towards a dim room light (0 for none)
uniform float u_room;
uniform int u_shadows;       // 1: sample the shadow map
uniform mat4 u_light_vp;     // world -> light clip space
uniform sampler2DShadow u_shadow_map;
uniform float u_shadow_bias; // in light window depth
out vec4 frag;

// c^(1/2.2) for c in [0, 1] within 0.08 of an 8-bit step: a fit in c^(k/4) (two square roots
// instead of a pow per channel; on llvmpipe each pow is a log2 and an exp2 of ~20 instructions).
vec3 display_gamma(vec3 c) {
    vec3 s = sqrt(c);
    vec3 q = sqrt(s);
    return 0.0455197 * q + 1.1800802 * s - 0.3217437 * s * q + 0.0964367 * c;
}

float lit_fraction(float ndl) {
    vec4 lp = v_light;
    if (lp.w <= 0.0) return 1.0;
    vec3 p = lp.xyz / lp.w * 0.5 + 0.5;
    if (p.x <= 0.0 || p.x >= 1.0 || p.y <= 0.0 || p.y >= 1.0 || p.z >= 1.0) return 1.0;
    // Slope-scaled: a surface at a grazing angle to the light needs more (no acne on cut faces).
    float c = max(ndl, 0.1);
    float bias = u_shadow_bias * clamp(sqrt(1.0 - c * c) / c, 1.0, 10.0);
    return texture(u_shadow_map, vec3(p.xy, p.z - bias));
}

void main() {
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    vec3 V = normalize(u_eye - v_world);
    vec3 toL = u_light_pos - v_world;
    float d = length(toL);
    vec3 L = toL / max(d, 1e-6);
    float att = u_light_power / (1.0 + (d * d) / (u_light_range * u_light_range));
    float spot = smoothstep(0.45, 0.9, dot(-L, u_light_dir));
    float diff = max(dot(n, L), 0.0);
    float lit = (u_shadows == 1) ? lit_fraction(diff) : 1.0;
    vec3 H = normalize(L + V);
    float ndh = max(dot(n, H), 0.0);
    float lg = log2(max(ndh, 1e-6));  // both lobes from one log2
    float spec = v_finish.y * exp2(v_finish.x * lg) + v_finish.z * exp2(0.08 * v_finish.x * lg);
    vec3 c = v_colour * (u_ambient + lit * diff * att * spot) + vec3(lit * spec * att * spot);
    c += v_colour * u_room * max(dot(n, u_room_dir), 0.0);
    frag = vec4(display_gamma(clamp(c, 0.0, 1.0)), 1.0);
}
"""

DEPTH_VS = """#version 330 core
layout(location = 0) in vec3 a_pos;
uniform mat4 u_model;
uniform mat4 u_view_proj;
uniform vec4 u_clip;
void main() {
    vec4 w = u_model * vec4(a_pos, 1.0);
    gl_ClipDistance[0] = dot(u_clip, w);
    gl_Position = u_view_proj * w;
}
"""

DEPTH_FS = """#version 330 core
void main() {}
"""

HUD_VS = """#version 330 core
layout(location = 0) in vec2 a_pos;
layout(location = 1) in vec4 a_colour;
uniform vec2 u_size;
out vec4 v_colour;
void main() {
    v_colour = a_colour;
    gl_Position = vec4(a_pos / u_size * 2.0 - 1.0, 0.0, 1.0);
}
"""

HUD_FS = """#version 330 core
in vec4 v_colour;
out vec4 frag;
void main() { frag = v_colour; }
"""

TEX_VS = """#version 330 core
layout(location = 0) in vec3 a_pos;
uniform mat4 u_mvp;
out vec2 v_uv;
void main() {
    v_uv = a_pos.xy + 0.5;
    gl_Position = u_mvp * vec4(a_pos, 1.0);
}
"""

TEX_FS = """#version 330 core
in vec2 v_uv;
uniform sampler2D u_tex;
out vec4 frag;
void main() { frag = vec4(texture(u_tex, v_uv).rgb, 1.0); }
"""


def compile_program(vs: str, fs: str) -> int:
    """Compile and link a vertex + fragment shader program; RuntimeError with the GL log."""
    prog = GL.glCreateProgram()
    shaders = []
    for kind, src in ((GL.GL_VERTEX_SHADER, vs), (GL.GL_FRAGMENT_SHADER, fs)):
        sh = GL.glCreateShader(kind)
        GL.glShaderSource(sh, src)
        GL.glCompileShader(sh)
        if not GL.glGetShaderiv(sh, GL.GL_COMPILE_STATUS):
            raise RuntimeError("shader compile failed: " + GL.glGetShaderInfoLog(sh).decode(errors="replace"))
        GL.glAttachShader(prog, sh)
        shaders.append(sh)
    GL.glLinkProgram(prog)
    if not GL.glGetProgramiv(prog, GL.GL_LINK_STATUS):
        raise RuntimeError("shader link failed: " + GL.glGetProgramInfoLog(prog).decode(errors="replace"))
    for sh in shaders:
        GL.glDeleteShader(sh)
    return prog
