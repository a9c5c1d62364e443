"""Serial bytes → lines, each stamped with the arrival tick of the chunk that ended it (pure).

The first of the GPS input's layers: `box/gps_serial.py` reads the port and stamps each
chunk, this module frames lines, `nmea.py` decides what a line means.
"""

from __future__ import annotations

import re

_TERMINATOR = re.compile(rb"[\r\n]")


class LineSplitter:
    """Turns a serial byte stream into lines, each stamped when its terminator arrived.

    CR, LF and CRLF all end a line; empty lines are dropped (so CRLF split across two
    chunks is still one line). A line's stamp is the `mono_ns` of the chunk holding the
    terminator byte that completed it: that is the earliest moment the line existed.

    Memory is bounded by `max_line`. A line longer than that is counted in `overlong`;
    only its last ``$``-sentence is kept, if that part fits, because a ``$`` always
    starts a new NMEA sentence and the usual cause of an overlong line is a binary
    (UBX/RTCM) packet with no CR/LF in front of a good sentence.  This rule gives the
    same lines however the stream is chunked.  Bytes are decoded as ASCII with
    replacement characters; the parser rejects anything not printable.
    """

    def __init__(self, max_line: int = 120) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self.lines = 0
        self.overlong = 0
        self.bytes_in = 0
        self._buf = bytearray()
        self._discarding = False
        self._overflowed = False

    @property
    def pending(self) -> int:
        """Bytes held for the incomplete line (never more than `max_line`)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial line (after a reconnect its bytes belong to nothing)."""
        self._buf.clear()
        self._discarding = False
        self._overflowed = False

    def feed(self, data: bytes, mono_ns: int) -> list[tuple[str, int]]:
        """Add one chunk; return the lines it completed, each with `mono_ns`."""
        self.bytes_in += len(data)
        out: list[tuple[str, int]] = []
        pieces = _TERMINATOR.split(bytes(data))
        for piece in pieces[:-1]:
            self._append(piece)
            self._finish(mono_ns, out)
        self._append(pieces[-1])
        return out

    def _append(self, piece: bytes) -> None:
        if not piece:
            return
        if self._discarding:
            # Still inside an overlong line: only a new '$' can start something useful.
            k = piece.rfind(b"$")
            if k < 0:
                return
            piece = piece[k:]
            self._discarding = False
        self._buf += piece
        if len(self._buf) > self.max_line:
            self._overflowed = True
            k = self._buf.rfind(b"$")
            if k > 0 and len(self._buf) - k <= self.max_line:
                del self._buf[:k]
            else:
                self._buf.clear()
                self._discarding = True

    def _finish(self, mono_ns: int, out: list[tuple[str, int]]) -> None:
        buf = self._buf
        if self._overflowed:
            self.overlong += 1
            if buf:
                # Keep the *last* sentence so the result does not depend on where
                # chunk boundaries fell while the buffer was being trimmed.
                del buf[: buf.rfind(b"$")]
        if buf and not self._discarding:
            out.append((buf.decode("ascii", "replace"), mono_ns))
            self.lines += 1
        self.reset()
