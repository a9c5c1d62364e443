"""A real Mosquitto broker on a loopback port, for tests and the simulator.

Tests of the MQTT link run against the broker the boxes meet in the field, not a
mock: reason codes, wills, retained messages and session handling are exactly
what Mosquitto does. The broker binds 127.0.0.1 only, so nothing outside the
machine can reach a test broker that allows anonymous clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from sim.waits import listening, wait_for

# Debian installs the broker in /usr/sbin, which is often not on a user's PATH.
_FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")

INSTALL_HINT = "install it with: sudo apt-get install mosquitto"


class MosquittoError(RuntimeError):
    """The broker could not be started or stopped; the message includes its log tail."""


class MosquittoNotInstalled(MosquittoError):
    """No mosquitto binary was found."""


def find_mosquitto(binary: str = "mosquitto") -> str:
    """Return the path of the mosquitto binary, or raise MosquittoNotInstalled.

    A `binary` containing a slash is taken as a path; otherwise PATH is searched,
    then the sbin directories distributions install daemons in.
    """
    if os.sep in binary:
        if os.access(binary, os.X_OK):
            return binary
        raise MosquittoNotInstalled(
            f"mosquitto binary {binary!r} is not executable; {INSTALL_HINT}"
        )
    found = shutil.which(binary)
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        candidate = os.path.join(directory, binary)
        if os.access(candidate, os.X_OK):
            return candidate
    searched = ", ".join(("PATH", *_FALLBACK_DIRS))
    raise MosquittoNotInstalled(f"{binary!r} not found (searched {searched}); {INSTALL_HINT}")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Mosquitto:
    """One Mosquitto process with its own config, log and persistence in `workdir`.

    `port=None` picks a free loopback port at the first start; `restart()` keeps it,
    so clients reconnect to the same URL. Use as a context manager or call
    `start()`/`stop()`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        persistence: bool = False,
        workdir: Path | None = None,
        extra_conf: str = "",
        binary: str = "mosquitto",
    ) -> None:
        self._requested_port = port
        self.port: int = port or 0
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir: Path = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix="checkpoint-mosquitto-"))
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        """The broker URL clients use: mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Mosquitto's own log file (log_dest file)."""
        return self.workdir / "mosquitto.log"

    @property
    def conf_path(self) -> Path:
        """The generated mosquitto.conf."""
        return self.workdir / "mosquitto.conf"

    @property
    def output_path(self) -> Path:
        """stdout/stderr of the process: config errors appear here, before the log opens."""
        return self.workdir / "mosquitto.out"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _write_conf(self) -> None:
        lines = [
            "# Written by sim.broker; regenerated at every start.",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            # Mosquitto requires the trailing slash on a directory location.
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Mosquitto leaves Nagle on its own sockets: an event to HQ then waits for
            # the delayed ACK of HQ's previous ack (~40 ms). The shipped config too.
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", which cannot
            # write into a root-owned test directory; "root" means "do not drop".
            lines.append("user root")
        if self.extra_conf:
            lines += ["# extra_conf", self.extra_conf.strip()]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _failure(self, what: str) -> MosquittoError:
        parts = [f"mosquitto {what} (port {self.port}, config {self.conf_path})"]
        out = _tail(self.output_path)
        log = _tail(self.log_path)
        if out:
            parts.append(f"--- output tail ---\n{out}")
        if log:
            parts.append(f"--- log tail ({self.log_path}) ---\n{log}")
        return MosquittoError("\n".join(parts))

    def start(self, timeout_s: float = 10) -> Mosquitto:
        """Write the config, start the broker and wait until it accepts TCP connections.

        Raises MosquittoNotInstalled if there is no binary, MosquittoError (with
        the log tail) if the broker exits or does not listen within `timeout_s`.
        """
        if self.running:
            raise MosquittoError(f"mosquitto already running on port {self.port}")
        binary = find_mosquitto(self.binary)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken by someone else before
        # mosquitto binds it; pick again then, unless the caller (or an earlier
        # start) fixed the port, because restarts must keep the URL.
        attempts = 1 if (self._requested_port or self._started_once) else 3
        for attempt in range(attempts):
            if not self.port or attempt > 0:
                self.port = free_port()
            try:
                self._spawn(binary, timeout_s)
            except MosquittoError as err:
                if attempt + 1 < attempts and "in use" in str(err):
                    continue
                raise
            self._started_once = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str, timeout_s: float) -> None:
        self._write_conf()
        # The log is appended across restarts (useful when a test fails), so
        # only what this process wrote counts as its start-up.
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.output_path, "wb") as out:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group: a Ctrl-C in the terminal goes to the test
                # runner, which then stops the broker in order.
                start_new_session=True,
            )

        def up() -> bool:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise self._failure(f"exited with status {code} at start")
            # A TCP connect alone could reach another process on a port we were
            # told to use; mosquitto logs "running" only after its listeners bound.
            return self._logged_running(log_offset) and listening(self.port)

        try:
            wait_for(up, timeout_s, "mosquitto to listen", error=TimeoutError)
        except TimeoutError:
            self._terminate(hard=True)
            raise self._failure(f"not listening after {timeout_s:g} s") from None

    def _logged_running(self, offset: int) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return b" running" in f.read()
        except OSError:
            return False

    def _terminate(self, *, hard: bool, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if hard:
            proc.kill()
        else:
            proc.terminate()
            # A paused (SIGSTOPped) broker only acts on SIGTERM once continued.
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=grace_s)
                return
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: mosquitto saves persistence), SIGKILL after 5 s."""
        self._terminate(hard=False)

    def kill(self) -> None:
        """SIGKILL: like a power cut, anything not yet saved to persistence is lost."""
        self._terminate(hard=True)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the broker's sockets stay open but it answers nothing (a dead link)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> Mosquitto:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Mosquitto({self.url}, {state}, workdir={self.workdir})"
