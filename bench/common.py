"""What every benchmark shares: statistics, /proc readings, an MQTT watcher, the HQ process.

Times are CLOCK_MONOTONIC integer nanoseconds unless a name says otherwise: the
injected edge ticks, the daemon's stamps and the watcher's arrival times are all
read from that one clock, on one machine, so their differences need no sync.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from checkpoint.contracts import STATUS
from checkpoint.errors import CheckpointError
from checkpoint.hq.store import HQStore
from checkpoint.mqtt import Link, LinkEvent, Message, SubAck
from sim import hqclient
from sim.waits import wait_for

NS = 1_000_000_000
MS = 1_000_000
REPO = Path(__file__).resolve().parent.parent

#: Extra mosquitto.conf per broker profile. "defaults" is Mosquitto as installed (what
#: sim.broker, the tests and the simulator run). "tuned" is what HQ's broker needs:
#: TCP_NODELAY on the broker's own sockets (its Nagle holds an event to HQ behind
#: HQ's delayed ACK of the broker's previous small packet), and a per-client queue
#: deep enough that a box draining a backlog never makes the broker drop QoS 1
#: messages to HQ (the default max_queued_messages is 1000).
BROKER_PROFILES = {
    "defaults": "",
    "tuned": "set_tcp_nodelay true\nmax_queued_messages 1000000",
}


class BenchError(RuntimeError):
    """A benchmark could not run (a process did not start, nothing arrived in time)."""


# -- the machine -----------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, CPU model (from /proc/cpuinfo), memory, Python and Mosquitto versions."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    mosquitto = None
    try:
        from sim.broker import find_mosquitto

        out = subprocess.run(
            [find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5
        ).stdout
        mosquitto = out.splitlines()[0].removeprefix("mosquitto version ").strip() or None
    except Exception:  # noqa: BLE001 - only informative
        pass
    sqlite = None
    try:
        import sqlite3

        sqlite = sqlite3.sqlite_version
    except ImportError:  # pragma: no cover
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite,
        "mosquitto": mosquitto,
    }


def git_version() -> str:
    """The checked-out commit, "+dirty" when the work tree has changes (new files too)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def now_iso() -> str:
    """UTC now, to the second."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MachineLoad:
    """How busy the whole machine was, and how much of that was not this bench.

    `stop()` returns the average number of cores busy (from /proc/stat) and the part
    of it used by this process and its (waited-for) children (`os.times()`): what is
    left is other work on the machine, which slows every figure measured meanwhile.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._busy0 = 0.0
        self._ours0 = 0.0

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        # guest time is already counted in user and nice
        return (sum(fields[:8]) - idle) / _CLK_TCK

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> MachineLoad:
        self._t0 = time.monotonic()
        self._busy0 = self._busy()
        self._ours0 = self._ours()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        busy = (self._busy() - self._busy0) / wall
        ours = (self._ours() - self._ours0) / wall
        return {
            "busy_cores": round(busy, 2),
            "bench_cores": round(ours, 2),
            "other_cores": round(max(0.0, busy - ours), 2),
        }


# -- statistics ------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(values_ns: Iterable[int]) -> dict[str, Any]:
    """n, p50, p99, max and mean of nanosecond durations, in milliseconds (3 decimals)."""
    xs = [v / MS for v in values_ns]
    if not xs:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "n": len(xs),
        "p50_ms": round(pct(xs, 50) or 0.0, 3),
        "p99_ms": round(pct(xs, 99) or 0.0, 3),
        "max_ms": round(max(xs), 3),
        "mean_ms": round(sum(xs) / len(xs), 3),
    }


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of (x, y) points; None for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def iso_to_ns(text: str | None) -> int | None:
    """HQ's `received_at` (ISO 8601 UTC, µs) as integer wall-clock ns."""
    if not text:
        return None
    try:
        t = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return calendar.timegm(t.timetuple()) * NS + t.microsecond * 1000


def wall_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now (the best of a few reads)."""
    best: tuple[int, int] | None = None
    for _ in range(5):
        a = time.monotonic_ns()
        w = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) // 2)
    assert best is not None
    return best[1]


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.02) -> Any:
    """`sim.waits.wait_for`, failing with the bench's BenchError after `timeout_s`."""
    return wait_for(pred, timeout_s, what, step_s, error=BenchError)


# -- /proc -----------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # After "pid (comm) ": field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of process `pid`, in MB (10^6 bytes)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmHWM", "VmRSS"):
            out[key] = round(int(line.split()[1]) * 1024 / 1e6, 1)
    return out


def write_bytes(pid: int) -> int:
    """Bytes process `pid` has caused to be written to storage (/proc/PID/io write_bytes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class CpuWindow:
    """CPU share (of one core) of some processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0
        self._c0: dict[str, float] = {}

    def start(self) -> None:
        self._c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._t0 = time.monotonic_ns()

    def stop(self) -> dict[str, Any]:
        """{"window_s": ..., name: percent of one core, ...}."""
        c1 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        wall = (time.monotonic_ns() - self._t0) / NS
        out: dict[str, Any] = {"window_s": round(wall, 2)}
        for name in self.pids:
            out[name] = round(100 * (c1[name] - self._c0[name]) / wall, 2) if wall else None
        return out


class DiskProbe:
    """The disk's own commit latency, beside a benchmark whose figures wait on it.

    A thread commits one small row every `period_s` to its own SQLite file at `path`,
    in WAL mode with synchronous=FULL (read back), as the box's store does: each commit
    fsyncs the WAL. The box publishes an event only after such a commit, so a commit
    that stalls on the machine's disk (a shared virtual disk can take 100-300 ms to
    flush while other work writes) holds every passage that comes meanwhile. `window()`
    says how this bare commit fared over a phase, so a stall of the disk is told from
    one of the box. Negligible load: one fsync per `period_s`, beside the box's and
    HQ's one per passage each.
    """

    def __init__(self, path: Path, period_s: float = 0.05) -> None:
        self.path = path
        self.period_s = period_s
        self.commits: list[tuple[int, int]] = []  # (start, end) ns; appended by the thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DiskProbe:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = db.execute("PRAGMA synchronous").fetchone()[0]
        if (mode, sync) != ("wal", 2):
            db.close()
            raise BenchError(f"disk probe {self.path}: journal_mode {mode}, synchronous {sync}")
        db.execute("CREATE TABLE IF NOT EXISTS probe (i INTEGER PRIMARY KEY, at INTEGER)")
        self._thread = threading.Thread(target=self._run, args=(db,), name="disk-probe")
        self._thread.daemon = True
        self._thread.start()
        return self

    def _run(self, db: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self.period_s):
                t0 = time.monotonic_ns()
                db.execute("INSERT INTO probe (at) VALUES (?)", [t0])  # autocommit: fsync
                self.commits.append((t0, time.monotonic_ns()))
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def window(self, t0_ns: int, t1_ns: int) -> dict[str, Any]:
        """The bare commits that overlapped [t0_ns, t1_ns]: `summary_ms`, and how many
        took 20 ms or more (`stalls_20ms`)."""
        took = [end - start for start, end in list(self.commits) if end >= t0_ns and start <= t1_ns]
        return {**summary_ms(took), "stalls_20ms": sum(d >= 20 * MS for d in took)}


# -- MQTT watcher ------------------------------------------------------------------------


class Watcher:
    """A bare MQTT subscriber that stamps each message's arrival (CLOCK_MONOTONIC ns).

    paho's thread only appends `(arrival_ns, topic, payload)`; `update()` parses what
    arrived since the last call into `events[box][seq] = (mono_ns, arrival_ns)` (passage
    events), `acks[box] = [(arrival_ns, upto), ...]`, `upto[box]` and `status[box]`.
    """

    def __init__(self, url: str, topics: Sequence[str], name: str = "watcher") -> None:
        self.raw: list[tuple[int, str, bytes]] = []
        self._pos = 0
        self.events: dict[str, dict[int, tuple[int | None, int]]] = {}
        self.acks: dict[str, list[tuple[int, int]]] = {}
        self.upto: dict[str, int] = {}
        self.status: dict[str, tuple[int, dict[str, Any]]] = {}
        self.other: list[tuple[int, str, bytes]] = []
        self._subscribed = threading.Event()
        self.link = Link(
            url,
            f"bench-{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}",
            self._on_event,
            subscriptions=[(t, 1) for t in topics],
        )

    def _on_event(self, ev: LinkEvent) -> None:
        t = time.monotonic_ns()
        if isinstance(ev, Message):
            self.raw.append((t, ev.topic, ev.payload))
        elif isinstance(ev, SubAck) and ev.ok:
            self._subscribed.set()

    def start(self, timeout_s: float = 15) -> Watcher:
        """Connect and wait until the broker granted the subscriptions."""
        self.link.start()
        self.wait_subscribed(timeout_s)
        return self

    def expect_resubscribe(self) -> None:
        """Call before restarting the broker; then `wait_subscribed()`."""
        self._subscribed.clear()

    def wait_subscribed(self, timeout_s: float = 15) -> None:
        if not self._subscribed.wait(timeout_s):
            raise BenchError(f"watcher not subscribed within {timeout_s} s")

    def stop(self) -> None:
        self.link.stop()

    def update(self) -> int:
        """Parse newly arrived messages; returns how many there were."""
        end = len(self.raw)
        items = self.raw[self._pos : end]
        self._pos = end
        for t, topic, payload in items:
            parts = topic.split("/")
            if len(parts) < 3:
                self.other.append((t, topic, payload))
                continue
            box, kind = parts[-2], parts[-1]
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if kind == "event" and isinstance(data, dict) and "seq" in data:
                mono = data.get("mono_ns") if data.get("type") == "passage" else None
                self.events.setdefault(box, {}).setdefault(data["seq"], (mono, t))
            elif kind == "ack" and isinstance(data, dict):
                upto = int(data.get("upto", 0))
                self.acks.setdefault(box, []).append((t, upto))
                self.upto[box] = max(self.upto.get(box, 0), upto)
            elif kind == "status" and isinstance(data, dict):
                self.status[box] = (t, data)
            else:
                self.other.append((t, topic, payload))
        return len(items)

    def acked(self, box: str) -> int:
        """HQ's highest ack for `box` so far (after parsing what arrived)."""
        self.update()
        return self.upto.get(box, 0)

    def ack_since(self, box: str, since_ns: int) -> bool:
        """Whether an HQ ack for `box` arrived after `since_ns`."""
        self.update()
        return any(t > since_ns for t, _upto in self.acks.get(box, []))

    def ready_since(self, box: str, since_ns: int) -> int | None:
        """Arrival time of a `ready` status of `box` that arrived after `since_ns`."""
        self.update()
        got = self.status.get(box)
        if got and got[0] > since_ns and got[1].get("state") == "ready":
            return got[0]
        return None

    def first_ready_after(self, box: str, since_ns: int) -> int | None:
        """Arrival time of the FIRST ready status of `box` after `since_ns` (scans all)."""
        self.update()
        for t, topic, payload in self.raw:
            if t > since_ns and topic.endswith(f"/{box}/{STATUS}") and b'"ready"' in payload:
                return t
        return None


def ack_times(acks: Sequence[tuple[int, int]]) -> Callable[[int], int | None]:
    """A function seq -> arrival time of the first ack covering it (None if never)."""
    times: list[int] = []
    highs: list[int] = []
    high = 0
    for t, upto in sorted(acks):
        if upto > high:
            high = upto
            times.append(t)
            highs.append(upto)

    import bisect

    def first(seq: int) -> int | None:
        i = bisect.bisect_left(highs, seq)
        return times[i] if i < len(times) else None

    return first


# -- the HQ collector process --------------------------------------------------------------


class HQProc:
    """`python -m checkpoint hq run` as a real process on its own database."""

    def __init__(self, workdir: Path, url: str, *, prefix: str = "rally") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "hq.db"
        self.url = url
        self.prefix = prefix
        self.log = workdir / "hq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30) -> HQProc:
        """Start it and wait until it is subscribed (its own `hq_state` says so)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "checkpoint",
                    *hqclient.run_args(self.url, self.db, self.prefix),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.workdir,
            )

        def subscribed() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"HQ exited at start: {self.tail()}")
            try:
                store = HQStore(self.db, create=False)
            except CheckpointError:
                return False
            try:
                return "subscribed_at" in store.state()
            except CheckpointError:
                return False
            finally:
                store.close()

        wait_until(subscribed, timeout_s, "HQ to subscribe", step_s=0.05)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def received_ns(self) -> dict[tuple[str, int], int]:
        """(box, seq) -> HQ's `received_at` (wall-clock ns) of every stored event."""
        store = HQStore(self.db, create=False)
        try:
            out = {}
            for r in store.events():
                ns = iso_to_ns(r.get("received_at"))
                if ns is not None:
                    out[(r["box"], r["seq"])] = ns
            return out
        finally:
            store.close()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
