"""The pure core: NMEA parsing, pulse pairing, the clock model, the detector, the
timing pipeline, the outbox and the event chain. No I/O here: no sockets, files,
threads or hardware libraries, so all of it is tested with known-truth data.
"""

# The one thing decided here, once, at import: which build of the core's modules loads,
# the compiled one or the Python source (checkpoint/native.py reads the build's manifest
# and hashes the sources it names: the only files the core's import touches; the same
# source either way).
from checkpoint.native import activate as _activate

_activate(__path__)
