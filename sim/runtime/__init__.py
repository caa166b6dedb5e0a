"""The runtime: the 1 kHz tick in real time (processes) or in lockstep, session recording, replay.

Modules:
- `devices`: the `--device` selection string -> HapticDevice; the device-to-world workspace map.
- `mailbox`: the seqlock snapshot mailbox over shared memory (servo -> renderer, servo <-> physics).
- `recording`: the append-only, CRC'd session recording (writer and reader).
- `tick`: the one tick both modes run (device sample -> targets -> scene.tick -> force -> record).
- `timing`: per-tick period/lateness/compute accounting and the timing report.
- `lockstep`: the deterministic single-process loop and `replay`.
- `realtime`: the servo+physics process, the supervisor, the render process entry.
- `multirate`: the physics process and the servo's local contact model for scenes that cannot
  hold 1 ms.
- `cli`: `trocar run`, `trocar replay`, `trocar bench loop`.

docs/runtime.md describes the processes, the mailbox, the recording format and the report.
"""
