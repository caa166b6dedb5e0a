"""Scripted hands play through the device path: the expert's first mid-air hand-off and placement."""

import numpy as np

from procedures.policies import make_hands
from procedures.policies.motion import HandDevice
from sim.runtime.procedure_session import LockstepAttempt


def test_expert_hands_off_mid_air_and_places_the_first_ring_on_the_right():
    hands = make_hands("expert", seed=0)
    assert all(isinstance(h, HandDevice) for h in hands)
    att = LockstepAttempt("peg_transfer", hands, max_s=8.0)
    try:
        proc = att.procedure
        while proc.progress().startswith("0/") and att.n < 7000:
            att.step()
        assert proc.progress().startswith("1/6 across"), proc.progress()
        assert proc.handoffs == 1 and proc.errors == []
        placed = [r for r in proc.rings if r.side == 1]
        assert len(placed) == 1 and placed[0].peg >= 6
        kinds = [(e.kind, e.tool) for e in att.scene.events]
        # Left lifts, right takes it mid-air, left lets go, right releases it on the peg.
        assert kinds[:4] == [("grasp_object", 0), ("grasp_object", 1), ("release_object", 0),
                             ("release_object", 1)]
        # The hands moved the tools only through their samples: the tool targets are the device
        # positions mapped by each hand's workspace map.
        for dev, wmap in zip(hands, att.wmaps, strict=True):
            s = dev.read()
            target = wmap.home[wmap.tool, :3] + wmap.scale * s.position
            assert np.allclose(att.control.targets[wmap.tool, :3], target)
    finally:
        att.close()


def test_policies_are_seeded():
    a = make_hands("novice", seed=3)[0].policy
    b = make_hands("novice", seed=3)[0].policy
    c = make_hands("novice", seed=4)[0].policy
    assert np.array_equal(a.tremor[0].freq, b.tremor[0].freq)
    assert not np.array_equal(a.tremor[0].freq, c.tremor[0].freq)
