"""Benchmarks: `python -m bench [--smoke] [--only NAME,...] [--out DIR]` (see bench/__main__.py).

Each benchmark drives the real processes (box daemon, HQ collector, Mosquitto) on
this machine and measures the naive way in the same run, so the comparisons are
ratios taken under the same load, not absolute times from another day.
"""
