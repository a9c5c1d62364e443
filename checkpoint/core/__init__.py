"""The pure core: NMEA parsing, pulse pairing, the clock model, the detector, the
timing pipeline, the outbox and the event chain. No I/O here: no sockets, files,
threads or hardware libraries, so all of it is tested with known-truth data.
"""
