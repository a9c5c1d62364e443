"""Rally simulator: real box daemons, a real broker and HQ, judged against exact truth.

`python -m sim run|capture|judge|check` (see sim/README.md). Also home of the
`checkpoint-sim` gpiozero pin factory (`sim.pins`) and the Mosquitto test helper
(`sim.broker`).
"""
