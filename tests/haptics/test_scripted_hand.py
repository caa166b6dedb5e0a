"""ScriptedHand: the base of every programmatic hand (policies, gym actions, random walks)."""

import numpy as np

from haptics.device import ScriptedHand
from research.policies import RandomHand


class _Line(ScriptedHand):
    def advance(self) -> None:
        self.position = self.position + np.array([1e-3, 0.0, 0.0])


def test_each_read_is_a_fresh_sample_of_where_the_program_put_the_handle():
    hand = _Line("line")
    with hand:
        samples = [hand.read() for _ in range(3)]
    assert [s.seq for s in samples] == [1, 2, 3]
    assert all(s.connected and s.fresh for s in samples)
    np.testing.assert_allclose(samples[-1].position, [3e-3, 0.0, 0.0])
    # a sample is a copy: moving the handle later does not rewrite what was read
    np.testing.assert_allclose(samples[0].position, [1e-3, 0.0, 0.0])


def test_force_is_kept_while_open_and_zeroed_on_close():
    hand = _Line("line", max_force=5.0)
    assert hand.spec.max_force == 5.0
    hand.open()
    hand.write_force([0.5, -1.0, 2.0])
    np.testing.assert_allclose(hand.last_force, [0.5, -1.0, 2.0])
    hand.close()
    np.testing.assert_array_equal(hand.last_force, 0.0)


def test_random_hand_is_seeded_and_stays_inside_its_reach():
    a, b = RandomHand(7), RandomHand(7)
    pa = np.array([a.read().position for _ in range(5000)])
    pb = np.array([b.read().position for _ in range(5000)])
    np.testing.assert_array_equal(pa, pb)
    assert np.abs(pa).max() <= 0.04 + 1e-12
    assert np.ptp(pa[:, 0]) > 1e-4  # it does walk
