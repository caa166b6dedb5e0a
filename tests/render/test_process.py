"""The render process loop (`sim.render.process.render_loop`), fed snapshots from a real Scene."""

import numpy as np
from render_helpers import tissue_mask

from sim.render.process import _buffers, render_loop


def test_render_loop_falls_back_from_window_to_headless_and_draws_new_snapshots(egl, recorded, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    snaps = iter(recorded["snapshots"][:3] + [None] * 10)  # None: nothing new, redraw the last
    frames = []
    used = render_loop(recorded["description"], lambda: next(snaps), "window", lambda: False, frames=5,
                       on_headless_frame=frames.append)
    assert used == "headless"
    assert len(frames) == 5
    assert all(tissue_mask(f).mean() > 0.05 for f in frames)
    np.testing.assert_array_equal(frames[3], frames[4])  # no new snapshot: the same picture


def test_mailbox_buffers_follow_the_layout():
    bufs = _buffers({"tissue_x": (10, 3), "tick": {"shape": (1,), "dtype": "float64"}})
    assert bufs["tissue_x"].shape == (10, 3) and bufs["tick"].dtype == np.float64


def test_render_main_reads_the_runtime_mailbox_and_stops_on_the_event(egl, recorded):
    import multiprocessing as mp

    from sim.render.process import render_main
    from sim.runtime.mailbox import SnapshotMailbox, layout_of

    snaps = recorded["snapshots"]
    layout = layout_of(snaps[0])
    box = SnapshotMailbox.create(layout)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=render_main, args=(box.name, layout, recorded["description"], "headless", stop))
    try:
        proc.start()
        for snap in snaps * 3:
            box.write(snap)
            if not proc.is_alive():
                break
            stop.wait(0.05)
        stop.set()
        proc.join(timeout=120)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        box.close()
        box.unlink()
