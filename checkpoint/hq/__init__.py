"""Timing HQ: the collector that ingests every box exactly once, its SQLite store,
the regularity results and the rally office, and `verify`, which checks HQ's records
and the boxes' against their chains.
"""
