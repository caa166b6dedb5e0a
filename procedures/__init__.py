"""Training tasks built on the scene: the procedure API (base), metrics, scoring, the FLS peg
transfer, and scripted hands (policies). See docs/procedures.md."""
