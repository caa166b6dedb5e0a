"""Scripted hands that play procedures through the device path (expert and novice styles).

`make_hands(name, seed)` returns one `HapticDevice` per hand; each has `observe(scene, wmap)`, which
the session step calls before `read()`: the policy looks at the world there and acts only through
the DeviceSample positions (device frame, via `wmap.inverse`) and gripper angles it returns.
"""

from procedures.policies.peg_transfer import POLICIES, make_hands

__all__ = ["POLICIES", "make_hands"]
