"""Fault injection for the reliability tests: a passage feeder that keeps count, small
filesystems that fill up or fail, and readers for the box's and HQ's SQLite files. Links
are cut with the simulator's `sim.proxy.LinkProxy`.

Everything here is real: the proxy forwards real MQTT bytes between a real box daemon
and a real Mosquitto, the filesystems are real kernel mounts, the stores are read with
sqlite3 exactly as written. Nothing is mocked; the helpers only decide *when* things
break and count what went where.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxrig import BoxRig
from waits import wait_for

from checkpoint.mqtt import Link, LinkEvent, Message
from sim import hqclient

NS = 1_000_000_000
MS = 1_000_000


# -- watching MQTT -------------------------------------------------------------------------


class Watcher:
    """Subscribes to topics and keeps every message with its arrival time (monotonic ns)."""

    def __init__(self, url: str, topics: list[str]) -> None:
        self.messages: list[tuple[int, str, bytes]] = []
        self._taken: dict[str, int] = {}
        self._lock = threading.Lock()
        self.link = Link(
            url, f"watch-{time.monotonic_ns()}", self._on, subscriptions=[(t, 1) for t in topics]
        )
        self.link.start()
        wait_for(lambda: self.link.connected, 10, "watcher connected")

    def _on(self, ev: LinkEvent) -> None:
        if isinstance(ev, Message):
            with self._lock:
                self.messages.append((time.monotonic_ns(), ev.topic, ev.payload))

    def payloads(self, suffix: str) -> list[tuple[int, bytes]]:
        """(arrival ns, payload) of messages whose topic ends with `suffix`."""
        with self._lock:
            return [(t, p) for t, topic, p in self.messages if topic.endswith(suffix)]

    def take(self, suffix: str, n: int, timeout: float) -> list[dict[str, Any]]:
        """The next `n` messages on topics ending with `suffix` (after those taken
        before), parsed, in arrival order; failing the test after `timeout`."""
        start = self._taken.get(suffix, 0)

        def next_n() -> list[tuple[int, bytes]]:
            got = self.payloads(suffix)[start : start + n]
            return got if len(got) == n else []

        got = wait_for(next_n, timeout, f"{n} messages on */{suffix.lstrip('/')}")
        self._taken[suffix] = start + n
        return [json.loads(p) for _, p in got]

    def statuses(self, since: int = 0) -> list[dict[str, Any]]:
        """Every status message received (after monotonic ns `since`), parsed."""
        out = []
        for t, p in self.payloads("/status"):
            if t >= since:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(p))
        return out

    def last_status(
        self, pred: Callable[[dict[str, Any]], bool] = lambda s: True, since: int = 0
    ) -> dict | None:
        """The latest status (after `since`) satisfying `pred`, or None."""
        for st in reversed(self.statuses(since)):
            if pred(st):
                return st
        return None

    def wait_status(
        self,
        pred: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        since: int | None = None,
    ) -> dict[str, Any]:
        """Wait for a status message satisfying `pred` that arrives after `since`
        (default: now; the box publishes its status every second and on every change),
        failing the test after `timeout`."""
        t0 = time.monotonic_ns() if since is None else since
        return wait_for(lambda: self.last_status(pred, t0), timeout, what)

    def close(self) -> None:
        """Disconnect."""
        self.link.stop()


# -- passages in, and what became of them ---------------------------------------------------


@dataclass
class Sent:
    """One passage the feeder put on the wire: its leading edge's tick, and when."""

    input: str
    mono_ns: int
    sent_ns: int


@dataclass
class PassageFeeder:
    """Breaks beams at `rate` passages/s, spread over `pins` (input name -> GPIO), in a
    thread, until stopped; keeps every passage whose edges reached the daemon's socket.

    Each passage is a break and a restore 2 ms apart, both in the past when sent (the
    kernel never stamps the future), in one write. The inputs must allow the rate:
    `lockout_ms = 0` and `min_break_ms = 1` (see `fast_inputs`). While the daemon is
    down (killed, restarting) nothing is sent and nothing is counted.
    """

    rig: BoxRig
    rate: float
    pins: dict[str, str] = field(default_factory=lambda: {"beam": "GPIO17"})
    sent: list[Sent] = field(default_factory=list)
    skipped: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> PassageFeeder:
        """Start feeding."""
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop sending for a while (e.g. around a kill); `resume()` continues."""
        self._paused.set()

    def resume(self) -> None:
        """Continue after `pause()`."""
        self._paused.clear()

    def stop(self) -> None:
        """Stop for good and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def snapshot(self) -> list[Sent]:
        """The passages sent so far."""
        with self._lock:
            return list(self.sent)

    def _run(self) -> None:
        period = 1.0 / self.rate
        names = list(self.pins)
        i = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # paces the cars: `rate` passages a second
            elif delay < -1:
                next_t = time.monotonic()  # fell behind (a kill): do not burst
            if self._paused.is_set():
                continue
            name = names[i % len(names)]
            i += 1
            lead = send_passage(self.rig, self.pins[name])
            if lead is not None:
                with self._lock:
                    self.sent.append(Sent(name, lead, time.monotonic_ns()))
            else:
                self.skipped += 1


def send_passage(rig: BoxRig, pin: str) -> int | None:
    """One passage on `pin`: a break and a restore 2 ms later, both already past, in one
    write. Returns the leading edge's tick, or None when the daemon is not connected."""
    lead = time.monotonic_ns() - 3 * MS
    lines = (
        json.dumps({"pin": pin, "mono_ns": lead, "state": 0})
        + "\n"
        + json.dumps({"pin": pin, "mono_ns": lead + 2 * MS, "state": 1})
        + "\n"
    ).encode()
    return lead if send_raw(rig, lines) else None


def send_raw(rig: BoxRig, data: bytes) -> bool:
    """Write feed lines to the daemon's pin factory; False when it is not connected."""
    with rig.lock:
        if rig.conn is None:
            return False
        try:
            rig.conn.sendall(data)
            return True
        except OSError:
            return False


def fast_inputs(*names_pins: tuple[str, str]) -> str:
    """[[inputs]] TOML for inputs that take a passage every few ms (load tests)."""
    out = []
    for name, pin in names_pins:
        out.append(
            f'[[inputs]]\nname = "{name}"\npin = "{pin}"\nlockout_ms = 0\nmin_break_ms = 1\n'
            "max_edges_per_s = 100000\n"
        )
    return "\n".join(out)


# -- reading the stores --------------------------------------------------------------------


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def box_events(db: Path) -> list[dict[str, Any]]:
    """Every event in a box store, by seq (payloads parsed)."""
    with contextlib.closing(_ro(db)) as c:
        rows = c.execute("SELECT seq, payload FROM events ORDER BY seq").fetchall()
    return [json.loads(p) for _, p in rows]


def box_store_id(db: Path) -> str:
    """The store id written in a box store."""
    with contextlib.closing(_ro(db)) as c:
        return c.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]


def hq_events(db: Path, box: str) -> list[dict[str, Any]]:
    """Every event HQ stored for `box` (payloads parsed), in (store, seq) order."""
    if not db.exists():
        return []
    with contextlib.closing(_ro(db)) as c:
        rows = c.execute(
            "SELECT payload FROM events WHERE box = ? ORDER BY store, seq", (box,)
        ).fetchall()
    return [json.loads(p) for (p,) in rows]


def hq_event_count(db: Path, box: str) -> int:
    """How many events HQ stored for `box` (cheap enough to poll during a drain)."""
    if not db.exists():
        return 0
    with contextlib.closing(_ro(db)) as c:
        try:
            return int(c.execute("SELECT COUNT(*) FROM events WHERE box = ?", (box,)).fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def hq_box_counters(db: Path, box: str) -> dict[str, int]:
    """HQ's lasting duplicate and conflict counters for `box`."""
    with contextlib.closing(_ro(db)) as c:
        row = c.execute("SELECT duplicates, conflicts FROM boxes WHERE box = ?", (box,)).fetchone()
    return {"duplicates": row[0] if row else 0, "conflicts": row[1] if row else 0}


def hq_chain_breaks(db: Path, box: str) -> int:
    """Breaks of the box's hash chain HQ found (0 where HQ predates the chain)."""
    with contextlib.closing(_ro(db)) as c:
        try:
            row = c.execute(
                "SELECT COALESCE(SUM(chain_breaks), 0) FROM stores WHERE box = ?", (box,)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def check_contiguous(events: list[dict[str, Any]]) -> None:
    """Seqs are exactly 1..N."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not contiguous: {gaps_of(seqs)}"


def gaps_of(seqs: list[int]) -> list[tuple[int, int]]:
    """Missing ranges in a sorted seq list starting at 1."""
    out, nxt = [], 1
    for s in sorted(seqs):
        if s > nxt:
            out.append((nxt, s - 1))
        nxt = max(nxt, s + 1)
    return out


def passage_keys(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(input, mono_ns) of every passage event, in order."""
    return [(e["input"], e["mono_ns"]) for e in events if e["type"] == "passage"]


# -- the daemon process ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- small real filesystems -----------------------------------------------------------------


def can_mount() -> str | None:
    """None if this process may mount filesystems, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "mounting a test filesystem needs root"
    probe = Path(f"/tmp/checkpoint-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return f"mount -t tmpfs is not permitted here: {r.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=False)
        return None
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, chunk: int = 64 * 1024) -> int:
    """Write a ballast file at `path` until the filesystem is full; returns its size."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # Big blocks first, then ever smaller ones, so not even a page is left.
        for size in (chunk, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    n = os.write(fd, block)
                except OSError:
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


@dataclass
class Ext4Image:
    """An ext4 filesystem in a file, loop-mounted with errors=remount-ro: the kernel's
    own "card failed, remount read-only" path can be triggered on it (trigger_fs_error)."""

    image: Path
    mountpoint: Path
    size_mb: int = 16

    def mount(self) -> Ext4Image:
        """Create (if needed) and mount the image."""
        if not self.image.exists():
            with open(self.image, "wb") as f:
                f.truncate(self.size_mb * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint)],
            check=True,
        )
        return self

    @property
    def device(self) -> str:
        """The loop device name (loopN)."""
        out = subprocess.run(
            ["findmnt", "-no", "SOURCE", str(self.mountpoint)],
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(out.stdout.strip()).name

    def fail(self) -> None:
        """Make the kernel see an ext4 error: the filesystem goes read-only at once, under
        the feet of every open file (exactly what a dying SD card does)."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("checkpoint test\n")

    def read_only(self) -> bool:
        """True when the mount is read-only now."""
        out = subprocess.run(
            ["findmnt", "-no", "OPTIONS", str(self.mountpoint)], capture_output=True, text=True
        )
        # An ext4 error sets "emergency_ro" (newer kernels) rather than flipping "rw".
        opts = set(out.stdout.strip().split(","))
        return bool(opts & {"ro", "emergency_ro"})

    def repair(self) -> None:
        """Unmount, fsck, mount read-write again: the marshal's new card, same files."""
        subprocess.run(["umount", str(self.mountpoint)], check=True)
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, check=False)
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint)],
            check=True,
        )

    def unmount(self) -> None:
        """Unmount (lazily, so a test failure never leaves it busy)."""
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)


def ext4_error_trigger_available() -> str | None:
    """None if loop-mounted ext4 with trigger_fs_error works here, else why not."""
    reason = can_mount()
    if reason:
        return reason
    for tool in ("mkfs.ext4", "losetup", "e2fsck"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    return None


# -- HQ as a real process, and figures ------------------------------------------------------


class HQProcess:
    """`python -m checkpoint hq run` as a child process on `db` (SIGKILL-able)."""

    def __init__(self, broker_url: str, db: Path, *, gap_wait_s: float = 1.0) -> None:
        self.broker_url, self.db, self.gap_wait_s = broker_url, db, gap_wait_s
        self.log = db.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HQProcess:
        """Start the collector and wait until it has subscribed (its state row says so)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "checkpoint",
                *hqclient.run_args(
                    self.broker_url, self.db, None, "--gap-wait", str(self.gap_wait_s)
                ),
            ],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self._subscribed, 20, "HQ process subscribed")
        return self

    def _subscribed(self) -> bool:
        if not self.db.exists():
            return False
        try:
            with contextlib.closing(_ro(self.db)) as c:
                rows = dict(c.execute("SELECT key, value FROM hq_state").fetchall())
        except sqlite3.Error:
            return False
        return rows.get("pid") == str(self.proc.pid if self.proc else 0) and rows.get(
            "subscribed_at", ""
        ) >= rows.get("started_at", "~")

    def kill(self) -> None:
        """SIGKILL, as a power cut at HQ."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


REPORT_DIR = Path(__file__).resolve().parents[1] / "out" / "reliability"


def report(name: str, figures: dict[str, Any]) -> None:
    """Print a test's measured figures and append them to out/reliability/figures.jsonl
    (speed is reported, never asserted: machines differ)."""
    line = json.dumps({"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures})
    print(f"\nFIGURES {line}")
    with contextlib.suppress(OSError):
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        with open(REPORT_DIR / "figures.jsonl", "a") as f:
            f.write(line + "\n")
