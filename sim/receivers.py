"""GPS receiver profiles: what a receiver sends on the serial line and the PPS pin, and
the receivers the simulator knows by name (as they ship, after the corpus' logs).
A scenario's `[receivers.NAME]` starts from one of these (`base`) or from defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Sentences a receiver may emit. Only RMC, GGA and ZDA carry time; the others are
#: filler that costs serial bytes (and so shifts the later sentences of a burst).
#: GSA and GSV come once per constellation (GSV in groups of four satellites).
SENTENCES = ("RMC", "GGA", "ZDA", "GSA", "GSV", "VTG", "GLL")
CONSTELLATIONS = ("GP", "GL", "GA", "GB")


@dataclass(frozen=True)
class Receiver:
    """A GPS receiver profile: what it sends on the serial line and the PPS pin."""

    name: str
    talker: str = "GP"
    sentences: tuple[str, ...] = ("RMC", "GGA")
    convention: str = "after"
    delay_ms: float = 50.0
    delay_jitter_ms: float = 2.0
    baudrate: int = 9600
    decimals: int = 2
    pps_jitter_ns: int = 500
    pps_outlier_rate: float = 0.0
    pps_outlier_ns: int = 50_000
    pps_width_ms: float = 100.0
    cold_start_s: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    week_rollover: bool = False
    #: Constellations tracked: one GSA each (GN talker) and a GSV group each, whose
    #: length follows the satellites in view (it varies with the sky).
    constellations: tuple[str, ...] = ("GP",)
    #: GSV only every this many seconds (MediaTek's default is 5).
    gsv_every_s: int = 1
    #: Binary (UBX) bytes a second, sent as frames between the sentences.
    ubx_bytes: int = 0
    #: The receiver's TX buffer (bytes). Output that does not fit when a second's
    #: messages are queued is dropped, as a u-blox does; 0: it never drops.
    tx_buffer: int = 0


# u-blox M8 (MAX-M8Q on a Pi HAT) at its factory settings: 9600 baud, GN talker,
# GPS + GLONASS, RMC VTG GGA 2xGSA GPGSV GLGSV GLL (~750 bytes, ending ~0.85 s
# after the pulse with a full sky). No ZDA: `checkpoint gps configure` adds it.
_UBLOX_M8 = Receiver(
    name="ublox-m8",
    talker="GN",
    sentences=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL"),
    convention="after",
    delay_ms=50,
    delay_jitter_ms=3,
    baudrate=9600,
    decimals=2,
    pps_jitter_ns=300,
    constellations=("GP", "GL"),
    tx_buffer=4096,
)
_WITH_ZDA = (*_UBLOX_M8.sentences, "ZDA")
# u-blox M9 (NEO-M9N) at its factory settings: 38400 baud, four constellations.
_UBLOX_M9 = replace(
    _UBLOX_M8,
    name="ublox-m9",
    delay_ms=40,
    baudrate=38400,
    pps_jitter_ns=200,
    constellations=("GP", "GL", "GA", "GB"),
)

BUILTIN_RECEIVERS: dict[str, Receiver] = {
    "ublox-m8": _UBLOX_M8,
    # The same M8 with the ZDA `gps configure` enables (as in the corpus' ublox-8.log):
    # ~830 bytes; the ZDA lands 0.9 s or more after its pulse.
    "ublox-m8-zda": replace(_UBLOX_M8, name="ublox-m8-zda", sentences=_WITH_ZDA),
    "ublox-m9": _UBLOX_M9,
    # An M9 someone set to 9600 baud: ~1300 bytes a second do not fit in 960. The
    # tail of each second overruns the next pulse and what the TX buffer cannot
    # hold is dropped.
    "ublox-m9-overrun": replace(
        _UBLOX_M9, name="ublox-m9-overrun", sentences=_WITH_ZDA, baudrate=9600, tx_buffer=1200
    ),
    # u-blox ZED-F9 at 115200 with UBX binary frames (NAV-PVT, NAV-SAT, ...) between
    # the sentences, as in the corpus' ublox-zed-f9r.log.
    "ublox-f9-ubx": replace(
        _UBLOX_M9,
        name="ublox-f9-ubx",
        sentences=_WITH_ZDA,
        delay_ms=30,
        delay_jitter_ms=2,
        baudrate=115200,
        pps_jitter_ns=100,
        ubx_bytes=1800,
        tx_buffer=8192,
    ),
    # MediaTek MT3339 (Adafruit Ultimate GPS HAT) at its factory 9600 baud: GGA GSA
    # RMC ZDA every second, GSV every fifth, late in the second (mt3339.log).
    "mt3339": Receiver(
        name="mt3339",
        talker="GP",
        sentences=("GGA", "GSA", "GSV", "RMC", "ZDA"),
        convention="after",
        delay_ms=400,
        delay_jitter_ms=15,
        baudrate=9600,
        decimals=3,
        pps_jitter_ns=800,
        gsv_every_s=5,
    ),
    # A receiver that announces the coming second before its pulse.
    "before-generic": Receiver(
        name="before-generic",
        talker="GP",
        sentences=("ZDA", "RMC"),
        convention="before",
        delay_ms=400,
        delay_jitter_ms=5,
        decimals=2,
        pps_jitter_ns=500,
    ),
}
