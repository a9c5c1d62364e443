"""A GPS receiver, simulated: PPS pulses and NMEA sentences on the box's clock.

For every true UTC second S the receiver (per its `Receiver` profile)

* asserts PPS at true S: box tick `clock.tick(S)` plus zero-mean Gaussian jitter
  (the Pi's interrupt latency varies; its mean is the same for beam edges and
  cancels, so it is not modelled) and, rarely, an outlier pulse stamped late;
* sends its sentence burst: "after" convention starting `delay_ms` after PPS(S),
  "before" convention starting `delay_ms` before PPS(S), each sentence arriving
  when its last byte has crossed the serial line at `baudrate` (10 bits a byte).

States: before `cold_start_s` the receiver has no time (empty fields), then time
without a fix (status V) until the fix; during an outage it keeps time but has no
fix. PPS only comes with a fix. Week-rollover firmware reports dates 1024 weeks
early (the box's parser must add them back).
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from sim.boxclock import BoxClock
from sim.scenario import Receiver

NS = 1_000_000_000
ROLLOVER_DAYS = 1024 * 7

NO_TIME, NO_FIX, FIX = "no_time", "no_fix", "fix"


def checksum(body: str) -> str:
    """NMEA checksum: XOR of the characters between '$' and '*', two hex digits."""
    c = 0
    for ch in body:
        c ^= ord(ch)
    return f"{c:02X}"


def sentence(body: str) -> str:
    """A complete sentence with checksum and CRLF."""
    return f"${body}*{checksum(body)}\r\n"


def _angle(value: float, degree_digits: int) -> tuple[str, bool]:
    """ddmm.mmmmm (or dddmm.mmmmm) and whether it is positive."""
    a = abs(value)
    deg = int(a)
    minutes = (a - deg) * 60
    return f"{deg:0{degree_digits}d}{minutes:08.5f}", value >= 0


def _hms(utc_s: int, decimals: int) -> str:
    t = _dt.datetime.fromtimestamp(utc_s, _dt.UTC)
    frac = "." + "0" * decimals if decimals else ""
    return f"{t:%H%M%S}{frac}"


def bodies(rx: Receiver, utc_s: int, state: str, lat: float, lon: float) -> list[str]:
    """The sentence bodies (without $ and checksum) the receiver sends for second `utc_s`."""
    t = rx.talker
    date = _dt.datetime.fromtimestamp(utc_s, _dt.UTC).date()
    if rx.week_rollover:
        date -= _dt.timedelta(days=ROLLOVER_DAYS)
    hms = _hms(utc_s, rx.decimals) if state != NO_TIME else ""
    ddmmyy = f"{date:%d%m%y}" if state != NO_TIME else ""
    fix = state == FIX
    la, north = _angle(lat, 2)
    lo, east = _angle(lon, 3)
    pos = f"{la},{'N' if north else 'S'},{lo},{'E' if east else 'W'}" if fix else ",,,"
    out = []
    for kind in rx.sentences:
        if kind == "RMC":
            status, mode = ("A", "A") if fix else ("V", "N")
            speed = "0.02" if fix else ""
            out.append(f"{t}RMC,{hms},{status},{pos},{speed},,{ddmmyy},,,{mode}")
        elif kind == "GGA":
            q, sats, hdop = ("1", "09", "0.95") if fix else ("0", "00", "99.99")
            alt = "152.3,M,-34.2,M" if fix else ",,,"
            out.append(f"{t}GGA,{hms},{pos},{q},{sats},{hdop},{alt},,")
        elif kind == "ZDA":
            zda = f"{date:%d},{date:%m},{date:%Y}" if state != NO_TIME else ",,"
            out.append(f"{t}ZDA,{hms},{zda},00,00")
        elif kind == "GSA":
            prns = ["05", "07", "09", "13", "15", "20", "29", "30"] if fix else []
            sats = ",".join((prns + [""] * 12)[:12])
            dop = "1.63,0.95,1.32" if fix else "99.99,99.99,99.99"
            out.append(f"{t}GSA,A,{3 if fix else 1},{sats},{dop}")
        elif kind == "GSV":
            out.append("GPGSV,1,1,04,05,45,123,38,07,30,210,35,09,60,045,42,13,15,300,30")
        elif kind == "VTG":
            out.append(f"{t}VTG,,T,,M,0.02,N,0.04,K,{'A' if fix else 'N'}")
        elif kind == "GLL":
            status = "A,A" if fix else "V,N"
            out.append(f"{t}GLL,{pos},{hms},{status}")
    return out


def sentence_length(kind: str, rx: Receiver) -> int:
    """Bytes of one sentence of `kind` with a fix (the longest form), CRLF included."""
    one = Receiver(name=rx.name, talker=rx.talker, sentences=(kind,), decimals=rx.decimals)
    return len(sentence(bodies(one, 1_745_762_400, FIX, 32.8328, -117.2713)[0]))


@dataclass(frozen=True, slots=True)
class Pulse:
    """One PPS pulse: rising and falling edge ticks, and the UTC second it marks."""

    utc_s: int
    rise: int
    fall: int


@dataclass(frozen=True, slots=True)
class Line:
    """One NMEA sentence and the box tick at which its last byte arrives."""

    tick: int
    utc_s: int
    text: str


class GpsReceiver:
    """One box's receiver: deterministic PPS and NMEA streams from `seed`.

    `power_on_utc_ns` is when the receiver got power (cold start counts from it);
    `rally_start_utc_ns` (settable later, in a live run once the boxes are locked)
    anchors the outage windows, which are given relative to the rally start.
    """

    def __init__(
        self,
        rx: Receiver,
        clock: BoxClock,
        *,
        seed: str,
        power_on_utc_ns: int,
        lat: float = 0.0,
        lon: float = 0.0,
    ) -> None:
        self.rx = rx
        self.clock = clock
        self.seed = seed
        self.power_on_utc_ns = power_on_utc_ns
        self.lat, self.lon = lat, lon
        self.rally_start_utc_ns: int | None = None

    def state(self, utc_s: int) -> str:
        """What the receiver knows in second `utc_s`: no time, time without fix, or a fix."""
        since = utc_s * NS - self.power_on_utc_ns
        cold = int(self.rx.cold_start_s * NS)
        if since < cold * 3 // 10:
            return NO_TIME
        if since < cold:
            return NO_FIX
        start = self.rally_start_utc_ns
        if start is not None:
            for at, dur in self.rx.outages:
                lo = start + int(at * NS)
                if lo <= utc_s * NS < lo + int(dur * NS):
                    return NO_FIX
        return FIX

    def first_second(self) -> int:
        """The first whole second after power-on."""
        return self.power_on_utc_ns // NS + 1

    def pulses(self, until_s: int | None = None) -> Iterator[Pulse]:
        """PPS pulses from power-on, in order (forever when `until_s` is None)."""
        rng = random.Random(f"{self.seed}/pps")
        width = int(self.rx.pps_width_ms * 1_000_000)
        s = self.first_second()
        while until_s is None or s <= until_s:
            # Draw every second, fix or not, so a cold start does not shift the jitter
            # series of the seconds after it.
            jitter = round(rng.gauss(0.0, self.rx.pps_jitter_ns)) if self.rx.pps_jitter_ns else 0
            late = 0
            if rng.random() < self.rx.pps_outlier_rate:
                late = round(self.rx.pps_outlier_ns * (0.3 + 0.7 * rng.random()))
            if self.state(s) == FIX:
                rise = self.clock.tick(s * NS) + jitter + late
                yield Pulse(s, rise, rise + width)
            s += 1

    def lines(self, until_s: int | None = None) -> Iterator[Line]:
        """NMEA sentences from power-on, in arrival order (forever when `until_s` is None)."""
        rng = random.Random(f"{self.seed}/nmea")
        rx = self.rx
        ns_per_byte = 10 * NS // rx.baudrate
        s = self.first_second()
        if rx.convention == "before":
            s += 1  # the burst naming the first second would precede power-on
        while until_s is None or s <= until_s:
            shift = round(rng.uniform(-rx.delay_jitter_ms, rx.delay_jitter_ms) * 1_000_000)
            delay = round(rx.delay_ms * 1_000_000) + shift
            start = s * NS + delay if rx.convention == "after" else s * NS - delay
            at = start
            for body in bodies(rx, s, self.state(s), self.lat, self.lon):
                text = sentence(body)
                at += len(text) * ns_per_byte
                yield Line(self.clock.tick(at), s, text)
            s += 1
