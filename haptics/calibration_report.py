"""The calibration report: one self-contained HTML page a lab files with the device.

Owns turning a checked profile (haptics/profile.py) into HTML: the device, versions and checksum,
every section's values and residuals, the per-hole jig errors, and PNG plots (matplotlib, Agg
canvas, no display needed) embedded as base64: workspace coverage, jig residuals, force fit,
gravity model, stability sweep and the round-trip histogram. A plot whose section the profile
lacks is left out.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from haptics import calibration as C


def _figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_workspace(prof: dict):
    """Swept range per axis [mm] (calibrated) against the jig points."""
    pos, ws = prof["position"], prof["workspace"]
    slope, off = np.asarray(pos["slope_counts_per_m"]), np.asarray(pos["offset_counts"])
    a = C.counts_to_position(np.asarray(ws["min_counts"]), slope, off) * 1e3
    b = C.counts_to_position(np.asarray(ws["max_counts"]), slope, off) * 1e3
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    fig = _figure()
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(range(3), hi - lo, bottom=lo, color="#9ecae1", label="swept range")
    for i in range(3):
        ax.plot([i] * len(C.JIG_POINTS), C.JIG_POINTS[:, i] * 1e3, "k_", ms=14)
    ax.set_xticks(range(3), ["x", "y", "z"])
    ax.set_ylabel("position [mm]")
    ax.set_title("workspace coverage (bars) and jig levels")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(C.JIG_POINTS[:, 0] * 1e3, C.JIG_POINTS[:, 1] * 1e3, "ko", label="jig holes")
    ax2.add_patch(_rect(lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]))
    ax2.set_xlabel("x [mm]")
    ax2.set_ylabel("y [mm]")
    ax2.set_aspect("equal")
    ax2.set_title("x-y footprint")
    return fig


def _rect(x, y, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, ec="#3182bd", lw=2)


def plot_residuals(prof: dict):
    """Jig error per hole and axis [mm]."""
    err = np.asarray(prof["position"]["jig_error_mm"], dtype=float)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    n = len(err)
    for i, name in enumerate("xyz"):
        ax.bar(np.arange(1, n + 1) + (i - 1) * 0.27, err[:, i] * 1e3, width=0.27, label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("jig hole")
    ax.set_ylabel("error after fit [um]")
    ax.set_title("position fit residuals")
    ax.legend()
    return fig


def plot_force(prof: dict):
    """True force (reference) against commanded force per axis [N], with the fitted gains."""
    f = prof["force"]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    gain = np.asarray(f["gain"], dtype=float)
    lim = float(f.get("push_n", 3.0)) * 1.2
    if "pushes_commanded_n" in f:
        c, t = np.asarray(f["pushes_commanded_n"]), np.asarray(f["pushes_true_n"])
        for i, name in enumerate("xyz"):
            m = np.abs(c[:, i]) > 0
            ax.plot(c[m, i], t[m, i], "o", label=f"{name}: gain {gain[i]:.4f}")
    else:
        for i, name in enumerate("xyz"):
            ax.plot([f["push_n"]], [gain[i] * f["push_n"]], "o", label=f"{name}: gain {gain[i]:.4f}")
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="ideal")
    ax.set_xlabel("commanded force [N]")
    ax.set_ylabel("true force [N]")
    ax.set_title("force fit")
    ax.legend()
    return fig


def plot_gravity(prof: dict):
    """Measured holding force per pose against the fitted model [N]."""
    g = prof["gravity"]
    h = np.asarray(g["holding_n"], dtype=float)
    model = C.gravity_force(np.asarray(g["coefficients"]), np.asarray(g["pose_m"]))
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate("xyz"):
        ax.plot(np.arange(len(h)), h[:, i], "o", label=f"{name} measured")
        ax.plot(np.arange(len(h)), model[:, i], "-", lw=0.8)
    ax.set_xlabel("pose")
    ax.set_ylabel("holding force [N]")
    ax.set_title("gravity: measured (dots) and fitted model (lines)")
    ax.legend(fontsize=7)
    return fig


def plot_stability(prof: dict):
    """Oscillation growth per wall stiffness of the Z-width sweep."""
    s = prof["stability"]
    k, r = np.asarray(s["sweep_k"], dtype=float), np.asarray(s["sweep_ratio"], dtype=float)
    stable = np.asarray(s["sweep_stable"], dtype=bool)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.semilogx(k[stable], r[stable], "o", color="#31a354", label="stable (decays)")
    ax.semilogx(k[~stable], np.minimum(r[~stable], 5), "x", color="#de2d26",
                label="oscillates (grows)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axvline(s["max_stiffness_n_per_m"], color="#3182bd", ls="--",
               label=f"max stable {s['max_stiffness_n_per_m']:.0f} N/m")
    ax.set_xlabel("wall stiffness [N/m]")
    ax.set_ylabel("oscillation growth (late / early RMS)")
    ax.set_title(f"stability sweep (wall damping {s['wall_damping_ns_per_m']:g} N s/m)")
    ax.legend()
    return fig


def plot_latency(prof: dict):
    """Round-trip histogram [us] and the dead time of each force step [ticks]."""
    lat = prof["latency"]
    fig = _figure()
    ax = fig.add_subplot(1, 2, 1)
    hist = lat.get("rtt_histogram")
    if hist:
        e, c = np.asarray(hist["edges_us"]), np.asarray(hist["counts"])
        ax.bar(e[:-1], c, width=np.diff(e), align="edge", color="#9ecae1")
    ax.axvline(lat["rtt_p50_us"], color="k", label="p50")
    ax.axvline(lat["rtt_p99_us"], color="r", label="p99")
    ax.set_xlabel("round trip [us]")
    ax.set_ylabel("FORCE frames")
    ax.set_title("round trip")
    ax.legend()
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.hist(np.asarray(lat.get("trial_dead_ticks", []), dtype=float), bins=10, color="#fdae6b")
    ax2.set_xlabel("dead time [ticks]")
    ax2.set_title(f"one way {lat['one_way_ms']:.2f} ms")
    return fig


PLOTS = (  # (title, sections it needs, function)
    ("workspace coverage", ("position", "workspace"), plot_workspace),
    ("residuals", ("position",), plot_residuals),
    ("force fit", ("force",), plot_force),
    ("gravity", ("gravity",), plot_gravity),
    ("stability sweep", ("stability",), plot_stability),
    ("latency", ("latency",), plot_latency),
)


def _cell(v) -> str:
    if isinstance(v, dict):
        return "<br>".join(f"{html.escape(k)}: {_cell(x)}" for k, x in v.items())
    if isinstance(v, list) and v and isinstance(v[0], list):
        return "<br>".join(_cell(r) for r in v)
    if isinstance(v, list):
        return ", ".join(f"{x:.4g}" if isinstance(x, float) else html.escape(str(x)) for x in v)
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def write_report(path: str, prof: dict) -> None:
    """Write the HTML report of a checked profile `prof` to `path` (plots embedded)."""
    parts = [f"<!doctype html><meta charset=utf-8><title>trocar calibration "
             f"{html.escape(prof['serial'])}</title><style>td,th{{border:1px solid #999;"
             "padding:2px 6px;text-align:left;vertical-align:top}table{border-collapse:collapse;"
             "margin-bottom:1em}img{max-width:100%}</style>",
             f"<h1>Calibration of {html.escape(prof['serial'])}</h1><table>"]
    for key in ("created", "protocol", "firmware", "counts_per_m", "sha256"):
        parts.append(f"<tr><th>{key}</th><td>{_cell(prof.get(key, ''))}</td></tr>")
    parts.append("</table><h2>plots</h2>")
    for title, needs, fn in PLOTS:
        if all(s in prof for s in needs):
            try:
                data = _png(fn(prof))
            except (KeyError, ValueError, TypeError) as exc:  # an older profile lacks a field
                parts.append(f"<p>{html.escape(title)}: not available ({html.escape(str(exc))})</p>")
                continue
            parts.append(f'<h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
                         f'src="data:image/png;base64,{data}">')
    for section in ("position", "workspace", "gravity", "force", "latency", "stability"):
        if section not in prof:
            continue
        parts.append(f"<h2>{section}</h2><table>")
        for k, v in sorted(prof[section].items()):
            parts.append(f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>")
        parts.append("</table>")
    if "jig_error_mm" in prof.get("position", {}):
        parts.append("<h2>jig points</h2><table><tr><th>hole</th><th>x, y, z [mm]</th>"
                     "<th>error x, y, z [mm]</th></tr>")
        for i, (p, e) in enumerate(zip(C.JIG_POINTS, prof["position"]["jig_error_mm"],
                                       strict=True), 1):
            parts.append(f"<tr><td>{i}</td><td>{_cell([float(x) * 1e3 for x in p])}</td>"
                         f"<td>{_cell(e)}</td></tr>")
        parts.append("</table>")
    with open(path, "w") as fh:
        fh.write("\n".join(parts) + "\n")
