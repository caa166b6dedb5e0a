"""FLS peg transfer rules on the real scene (PyBullet), played through the device path."""

import json

import numpy as np
import pytest

from procedures.base import ProcedureResult
from procedures.peg_transfer import CUTOFF_S, PegTransfer
from sim.runtime.procedure_session import LockstepAttempt
from tests.procedures.conftest import WaypointHand, ring_rim

OPEN, CLOSED = 0.6, 0.0
RING = 3  # starts on peg 3: left side, inner column, front row


def pick(k: int):
    """Steps that grasp ring k at its near rim with the left hand and lift it 3 cm above the pegs."""
    return [
        (lambda s: ring_rim(s, k, -1.0, 0.02), OPEN, 0.5),
        (lambda s: ring_rim(s, k, -1.0, 0.001), OPEN, 0.3),
        (lambda s: ring_rim(s, k, -1.0, 0.001), CLOSED, 0.15),
        (lambda s: ring_rim(s, k, -1.0, 0.0) + [0.0, 0.0, 0.03], CLOSED, 0.4),
    ]


def run_until_settled(att: LockstepAttempt, hand: WaypointHand, extra_s: float = 1.5) -> None:
    while not hand.finished:
        att.step()
    for _ in range(int(extra_s / att.scene.dt)):
        att.step()


def attempt(steps) -> tuple[LockstepAttempt, WaypointHand]:
    left, right = WaypointHand(steps), WaypointHand([])
    return LockstepAttempt("peg_transfer", [left, right]), left


def kinds(proc: PegTransfer) -> list[str]:
    return [e.kind for e in proc.errors]


def test_drop_on_the_board_in_view_is_a_drop_and_can_be_picked_up_again():
    att, left = attempt(pick(RING) + [([0.0, -0.03, 0.06], CLOSED, 0.5), ([0.0, -0.03, 0.06], OPEN, 0.1)])
    try:
        run_until_settled(att, left)
        proc = att.procedure
        assert kinds(proc) == ["drop"]
        assert proc.drops == 1 and proc.lost == 0
        assert proc.rings[RING].state == "rest"  # may be picked up again
        assert "object dropped" in proc.hud()["warnings"] or proc.hud()["warnings"] == []
        result = att.result()
        assert result.metrics["drops"].value == 1
        assert result.status == "incomplete" and not result.passed
    finally:
        att.close()


def test_drop_outside_the_view_loses_the_object():
    att, left = attempt(pick(RING) + [([0.0, -0.03, 0.06], CLOSED, 0.5), ([0.0, -0.03, 0.06], OPEN, 0.1)])
    try:
        # The scope turned away from the board (toward the left wall): the same drop is unseen.
        att.scene.scope.pivot(d_yaw=np.pi / 2)
        assert not att.scene.scope.in_view(np.array([[0.0, -0.03, 0.012]]))[0]
        run_until_settled(att, left)
        proc = att.procedure
        assert kinds(proc) == ["object_lost"]
        assert "outside the field of view" in proc.errors[0].message
        assert proc.lost == 1 and proc.rings[RING].state == "lost"
        assert proc.penalty() == pytest.approx(100.0 / 6)
    finally:
        att.close()


def test_drop_off_the_board_loses_the_object():
    att, left = attempt(pick(RING) + [([-0.12, -0.03, 0.06], CLOSED, 0.6), ([-0.12, -0.03, 0.06], OPEN, 0.1)])
    try:
        run_until_settled(att, left)
        proc = att.procedure
        assert kinds(proc) == ["object_lost"]
        assert "off the board" in proc.errors[0].message
    finally:
        att.close()


def test_transfer_without_a_mid_air_hand_off_is_flagged():
    # The left hand carries the ring straight over the free right peg 9 and lets it go there.
    def over_peg(s):
        spec = s.rigid.pegboard.spec
        ring = s.rigid.body_pose(s.rigid.graspable[RING])[:3]
        tip = s.tools[0].tip()
        peg = spec.peg_world(9)
        return tip + [peg[0] - ring[0], peg[1] - ring[1], spec.top + spec.peg_height + 0.006 - ring[2]]

    steps = pick(RING) + [([0.035, -0.04, 0.07], CLOSED, 0.6)] + [(over_peg, CLOSED, 0.2)] * 4
    steps += [(lambda s: s.tools[0].tip(), OPEN, 0.1), (lambda s: s.tools[0].tip() + [0, 0, 0.03], OPEN, 0.3)]
    att, left = attempt(steps)
    try:
        run_until_settled(att, left)
        proc = att.procedure
        assert kinds(proc) == ["transfer_without_handoff"]
        assert proc.rings[RING].peg == 9
        assert proc.penalty() == pytest.approx(100.0 / 12)
    finally:
        att.close()


def test_the_300_s_cut_off_ends_the_attempt():
    att = LockstepAttempt("peg_transfer", [WaypointHand([]), WaypointHand([])], max_s=1.0)
    try:
        proc = att.procedure
        assert proc.cutoff_s == CUTOFF_S == 300.0
        for _ in range(10):
            att.step()
        assert proc.status == "running"
        # Time is ticks x dt from the attempt's first tick: the tick that completes 300 s ends it.
        proc.update(att.scene, proc.tick0 + 299_998, [])
        assert proc.status == "running"
        proc.update(att.scene, proc.tick0 + 299_999, [])
        assert proc.status == "timeout" and proc.done
        result = att.result()
        assert result.status == "timeout" and result.score == 0.0 and not result.passed
        assert result.duration_s == pytest.approx(300.0)
    finally:
        att.close()


def test_result_json_round_trips_with_units():
    att = LockstepAttempt("peg_transfer", [WaypointHand([]), WaypointHand([])], max_s=0.5)
    try:
        for _ in range(200):
            att.step()
        result = att.result()
        text = result.to_json()
        back = ProcedureResult.from_json(text)
        assert back == result
        d = json.loads(text)
        assert d["procedure"] == "peg_transfer" and d["status"] == "incomplete"
        assert d["metrics"]["path_length_left"]["unit"] == "m"
        assert d["metrics"]["force_max"]["unit"] == "N"
        assert np.isfinite(d["metrics"]["completion_time"]["value"])
        assert d["metrics"]["log_dimensionless_jerk"]["value"] is None  # no movement: undefined
    finally:
        att.close()
