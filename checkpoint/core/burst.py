"""Where each second's GPS output ends: the burst's last line relative to the pulse.

A receiver's sentences for one second leave as one burst on the serial line. At a
low baud rate a chatty receiver's burst ends late in the second (a u-blox M8 at its
factory 9600 baud: ~0.9 s after the pulse) or overruns the next pulse, which costs
time sentences (the receiver drops what does not fit) and makes the phase evidence
of the pairing weaker. The box measures it so `checkpoint doctor` can say so and
`checkpoint gps configure` can be run before a rally. Pure: fed by the pipeline with
the pulses the pairer put on its grid and every line's arrival tick.
"""

from __future__ import annotations

from collections import deque
from typing import Any

NS_PER_S = 1_000_000_000


class BurstMeter:
    """Per pulse interval: the phase of the last line and the bytes received."""

    def __init__(self, seconds: int = 16) -> None:
        self._pulse: int | None = None
        self._last_phase: int | None = None
        self._bytes = 0
        self._ends: deque[int] = deque(maxlen=seconds)
        self._sizes: deque[int] = deque(maxlen=seconds)

    def pulse(self, mono_ns: int) -> None:
        """A pulse on the grid: the interval before it is complete."""
        prev = self._pulse
        if prev is not None and mono_ns - prev < 3 * NS_PER_S // 2 and self._bytes:
            # Only whole one-second intervals: a missed pulse would double the bytes.
            self._sizes.append(self._bytes)
            if self._last_phase is not None:
                self._ends.append(self._last_phase)
        self._pulse = mono_ns
        self._last_phase = None
        self._bytes = 0

    def line(self, mono_ns: int, size: int) -> None:
        """One line (`size` bytes with its terminator) arrived at `mono_ns`."""
        if self._pulse is None or mono_ns < self._pulse:
            return
        self._last_phase = mono_ns - self._pulse
        self._bytes += size

    def status(self, baudrate: int | None = None) -> dict[str, Any]:
        """Median/max end of the burst (ms after the pulse), bytes a second, line load."""
        if not self._ends:
            return {"end_ms": None, "end_ms_max": None, "bytes_per_s": None, "line_load": None}
        ends = sorted(self._ends)
        sizes = sorted(self._sizes)
        per_s = sizes[len(sizes) // 2]
        return {
            "end_ms": round(ends[len(ends) // 2] / 1e6),
            "end_ms_max": round(ends[-1] / 1e6),
            "bytes_per_s": per_s,
            # 10 bits a byte (8N1); above ~0.9 the receiver is about to drop output.
            "line_load": round(per_s * 10 / baudrate, 2) if baudrate else None,
        }
