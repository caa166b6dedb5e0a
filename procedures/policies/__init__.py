"""Scripted hands that play procedures through the device path (expert and novice styles).

`make_hands(name, seed, procedure)` returns one `HapticDevice` per hand; each has
`observe(scene, wmap)`, which the session step calls before `read()`: the policy looks at the world
there and acts only through the DeviceSample positions (device frame, via `wmap.inverse`), gripper
angles and (where the hand turns the instrument) rolls it returns.
"""

from procedures.policies.peg_transfer import POLICIES


def make_hands(name: str, seed: int = 0, procedure: str = "peg_transfer") -> list:
    """The scripted hands of style `name` (expert, novice) for `procedure`."""
    if procedure == "pattern_cut":
        from procedures.policies.pattern_cut import make_hands as cut_hands

        return cut_hands(name, seed)
    if procedure == "cholecystectomy":
        from procedures.policies.cholecystectomy import make_hands as chole_hands

        return chole_hands(name, seed)
    if procedure != "peg_transfer":
        raise ValueError(f"no scripted hands for procedure {procedure!r}")
    from procedures.policies.peg_transfer import make_hands as peg_hands

    return peg_hands(name, seed)


__all__ = ["POLICIES", "make_hands"]
