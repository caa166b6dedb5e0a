"""The research API: gymnasium environments (`research.envs`) on the one session step.

Why not `procedures/envs/` (the STYLE sketch): an environment advances its session through
`sim.runtime.step.SessionStep` and renders through `sim.render`, and procedures never import the
runtime or the renderer. Batches of scripted episodes live in `benchmarks/` (`trocar batch`).
"""
