"""checkpoint: GPS-disciplined timing boxes for rallies.

Data flows config → edges → nmea → pairing/clock → detector → timing → store →
outbox → mqtt → daemon → cli; each module is one concept, named for it.
"""

__version__ = "0.1.0"
EVENT_SCHEMA = "checkpoint/event/1"
CAPTURE_FORMAT = "checkpoint-capture"
CAPTURE_VERSION = 1
