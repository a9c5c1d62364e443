"""What doctor observed (`Facts`, each status as a `Snapshot`), its thresholds (`Limits`)
and the shape of its answer (`Check`, `Report`): shared by doctor.py, which gathers,
and the pure checks in diagnosis.py and gps_checks.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MB = 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    """One status message: when doctor received it (monotonic s) and whether it was live."""

    received_s: float
    live: bool
    status: dict[str, Any]


@dataclass
class Facts:
    """Everything doctor observed; `diagnose` needs nothing else."""

    config_file: str = ""
    config_error: str | None = None
    box: str = ""
    checkpoint: str = ""
    gps_port: str = ""
    pps_pin: str = ""
    input_sources: dict[str, str] = field(default_factory=dict)
    broker_url: str = ""
    # "connected", "refused", "unreachable" or "not checked"
    broker: str = "not checked"
    broker_detail: str = ""
    subscribe_error: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    waited_s: float = 0.0
    walk_test_s: float | None = None
    walk_passage: dict[str, Any] | None = None
    store_path: str = ""
    store_error: str | None = None
    store_id: str | None = None
    store_counts: dict[str, int] | None = None
    store_pragmas: dict[str, Any] | None = None
    disk_free: int | None = None
    disk_total: int | None = None
    # "active", "inactive", "failed", "activating", ... or "unknown" (no systemd)
    service: str = "unknown"
    # The marshal page: its URL ("" = not enabled) and doctor_web.probe's answer.
    web_url: str = ""
    web: str = "off"


@dataclass(frozen=True)
class Limits:
    """Thresholds; defaults suit a box on an SD card timing to the tenth."""

    min_free_bytes: int = 200 * MB
    warn_free_bytes: int = 1024 * MB
    max_uncertainty_ns: int = 100_000
    warn_backlog: int = 100
    # Counters are compared over at least this long before "nothing arrives" is said.
    min_window_s: float = 2.5
    # The GPS burst ending later than this after the pulse, or filling more than this
    # share of the serial line, is a warning: the next sentence set or baud rate up and
    # the receiver starts dropping output (gps configure fixes both).
    late_burst_ms: int = 800  # median end of the burst
    overrun_burst_ms: int = 950  # latest end seen: about to pass the next pulse
    max_line_load: float = 0.85


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    text: str
    short: str = ""


@dataclass
class Report:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        return not any(c.level == FAIL for c in self.checks)

    @property
    def verdict(self) -> str:
        fails = [c.short or c.text for c in self.checks if c.level == FAIL]
        return "READY" if not fails else "NOT READY: " + "; ".join(fails)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "verdict": self.verdict,
            "checks": [asdict(c) for c in self.checks],
        }


def _lines(fix: dict[str, Any]) -> int:
    """Every NMEA line the daemon's parser saw (a no_fix line is both accepted and rejected)."""
    rejects = fix.get("rejects") or {}
    return (
        int(fix.get("accepted", 0))
        + sum(int(v) for v in rejects.values())
        - int(rejects.get("no_fix", 0))
        + int(fix.get("ignored", 0))
    )


def counters(st: dict[str, Any]) -> tuple[int, int, int, int]:
    """A status's GPS counters: (NMEA lines, accepted, valid, PPS pulses)."""
    fix = st.get("fix") or {}
    return (
        _lines(fix),
        int(fix.get("accepted", 0)),
        int(fix.get("valid", 0)),
        int(st.get("pps_pulses") or 0),
    )


def baseline(snaps: list[Snapshot]) -> Snapshot:
    """The earliest snapshot of the latest daemon run (counters never go down within one)."""
    last = counters(snaps[-1].status)
    for snap in snaps:
        if all(a <= b for a, b in zip(counters(snap.status), last, strict=True)):
            return snap
    return snaps[-1]


def usable(snaps: list[Snapshot]) -> list[Snapshot]:
    return [s for s in snaps if s.status.get("state") == "ready"]
