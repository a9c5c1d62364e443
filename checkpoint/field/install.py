"""`sudo checkpoint install`: put a box's system files in place, idempotently.

What goes where (sources in the repository's `systemd/`, `firmware_config/` and
`examples/`):

==========================================  ============================================
/etc/systemd/system/checkpoint.service      the box daemon's unit (hardened, Type=notify)
/etc/systemd/system/checkpoint-hq.service   HQ's unit (installed, not enabled)
/usr/lib/sysusers.d/checkpoint.conf         the ``checkpoint`` user, groups gpio/dialout
/etc/modules-load.d/checkpoint.conf         USB serial drivers at boot (a GPS plugged in late)
/etc/udev/rules.d/99-checkpoint.rules       /dev/gps0, gpiochip group access
/etc/chrony/conf.d/checkpoint.conf          chrony fed by the daemon (SOCK refclock)
/etc/systemd/system/chrony.service.d/       its socket writable by group checkpoint
  checkpoint.conf
/etc/checkpoint/box.toml                    the example config, only if none exists
/etc/checkpoint/hq.env                      HQ's settings, only if none exists
/boot/firmware/config.txt                   a marked block appended (asks first)
/boot/firmware/cmdline.txt                  serial console removed (asks first)
==========================================  ============================================

Files are compared before writing: a second run changes nothing and says so. Firmware
files are changed only after showing a unified diff and a "y" answer (or ``--yes``).
With ``--root DIR`` everything is written under DIR and no command is run (they are
printed instead): that is how the tests and image builders use it. With the real root,
the user is created (``systemd-sysusers``, or ``useradd`` where that is missing), udev
and systemd are reloaded, and ``checkpoint.service`` is enabled.
"""

from __future__ import annotations

import difflib
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from checkpoint.errors import CheckpointError
from checkpoint.field.firmware import (
    BEGIN,
    END,
    config_pins,
    merge_config_txt,
    strip_serial_console,
)

MODULES_LOAD = "/etc/modules-load.d/checkpoint.conf"
CHRONY_DROPIN = "/etc/systemd/system/chrony.service.d/checkpoint.conf"


class InstallError(CheckpointError):
    """Something the installer needs is missing or cannot be written."""


# -- pure text transforms ---------------------------------------------------------------


def firmware_block(fragment: str) -> str:
    """The marked block of firmware_config/config.txt (BEGIN to END lines, inclusive)."""
    lines = fragment.splitlines()
    try:
        i, j = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise InstallError(f"config.txt fragment lacks the {BEGIN!r}/{END!r} markers") from None
    return "\n".join(lines[i : j + 1]) + "\n"


def render_unit(text: str, program: str) -> str:
    """A unit template with @CHECKPOINT@ replaced by the program's path."""
    return text.replace("@CHECKPOINT@", program)


# -- locating things ------------------------------------------------------------------------


def assets_dir() -> Path:
    """The folder holding systemd/, firmware_config/ and examples/.

    A source checkout or editable install: the repository root next to the package.
    A wheel install: ``{sys.prefix}/share/checkpoint`` (see the README).
    """
    candidates = [
        Path(__file__).resolve().parent.parent.parent,
        Path(sys.prefix) / "share" / "checkpoint",
    ]
    for c in candidates:
        if (c / "systemd" / "checkpoint.service").is_file() and (c / "firmware_config").is_dir():
            return c
    raise InstallError(
        "cannot find the systemd/ and firmware_config/ files (looked in "
        + ", ".join(str(c) for c in candidates)
        + "): install from a source checkout"
    )


def program_path() -> str:
    """The installed `checkpoint` program the unit should run."""
    beside = Path(sys.executable).with_name("checkpoint")
    if beside.is_file():
        return str(beside)
    found = shutil.which("checkpoint")
    if found:
        return str(Path(found).resolve())
    return f"{sys.executable} -m checkpoint"


# -- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file the installer wants to be `new` (None: keep what is there)."""

    dest: str  # absolute path on the target system
    new: str
    old: str | None
    mode: int = 0o644
    keep_existing: bool = False
    firmware: bool = False

    @property
    def needed(self) -> bool:
        if self.old is None:
            return True
        return not self.keep_existing and self.old != self.new


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _target(root: Path, dest: str) -> Path:
    return root / dest.lstrip("/")


def plan_files(root: Path, assets: Path, program: str) -> list[FileChange]:
    """Every non-firmware file, with what is on the target now."""
    src = {
        "/etc/systemd/system/checkpoint.service": render_unit(
            (assets / "systemd/checkpoint.service").read_text(), program
        ),
        "/etc/systemd/system/checkpoint-hq.service": render_unit(
            (assets / "systemd/checkpoint-hq.service").read_text(), program
        ),
        "/usr/lib/sysusers.d/checkpoint.conf": (assets / "systemd/checkpoint.sysusers").read_text(),
        MODULES_LOAD: (assets / "systemd/checkpoint.modules-load").read_text(),
        "/etc/udev/rules.d/99-checkpoint.rules": (
            assets / "firmware_config/99-checkpoint.rules"
        ).read_text(),
        "/etc/chrony/conf.d/checkpoint.conf": (
            assets / "firmware_config/chrony-checkpoint.conf"
        ).read_text(),
        CHRONY_DROPIN: (assets / "systemd/chrony-checkpoint.conf").read_text(),
    }
    changes = [FileChange(dest, new, _read(_target(root, dest))) for dest, new in src.items()]
    for dest, source in (
        ("/etc/checkpoint/box.toml", assets / "examples/box.toml"),
        ("/etc/checkpoint/hq.env", assets / "systemd/hq.env"),
    ):
        changes.append(
            FileChange(dest, source.read_text(), _read(_target(root, dest)), keep_existing=True)
        )
    return changes


def plan_firmware(root: Path, assets: Path) -> tuple[list[FileChange], list[str]]:
    """Firmware edits needed, and notes on what was skipped.

    The box config on the target (or the example the installer puts there) names the
    pins whose pps-gpio overlays must go.
    """
    notes: list[str] = []
    changes: list[FileChange] = []
    block = firmware_block((assets / "firmware_config/config.txt").read_text())
    box = _read(_target(root, "/etc/checkpoint/box.toml"))
    pins = config_pins(box if box is not None else (assets / "examples/box.toml").read_text())
    for dest, transform in (
        ("/boot/firmware/config.txt", lambda text: merge_config_txt(text, block, pins=pins)),
        ("/boot/firmware/cmdline.txt", strip_serial_console),
    ):
        old = _read(_target(root, dest))
        if old is None:
            notes.append(f"{dest}: not found (not Raspberry Pi OS Bookworm?): left alone")
            continue
        changes.append(FileChange(dest, transform(old), old, firmware=True))
    return changes, notes


def diff(change: FileChange) -> str:
    return "".join(
        difflib.unified_diff(
            (change.old or "").splitlines(keepends=True),
            change.new.splitlines(keepends=True),
            fromfile=change.dest,
            tofile=change.dest + " (checkpoint)",
        )
    )


def write(root: Path, change: FileChange) -> None:
    """Write one file atomically (temp file + rename), creating folders."""
    path = _target(root, change.dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.checkpoint-tmp")
    tmp.write_text(change.new, encoding="utf-8")
    os.chmod(tmp, change.mode)
    os.replace(tmp, path)


# -- commands on the real system ------------------------------------------------------------


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _enabled(root: Path, unit: str) -> bool:
    return (root / "etc/systemd/system/multi-user.target.wants" / unit).exists()


def modules(text: str) -> list[str]:
    """Module names in a modules-load.d file (comments and blank lines skipped)."""
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [n for n in names if n]


def plan_commands(root: Path, changed: set[str], load: Sequence[str] = ()) -> list[list[str]]:
    """Commands that would bring the system in line, given the files just changed.

    `load`: the kernel modules of the modules-load.d file, loaded now if it changed.
    """
    cmds: list[list[str]] = []
    if not _user_exists("checkpoint"):
        if shutil.which("systemd-sysusers"):
            cmds.append(["systemd-sysusers", "/usr/lib/sysusers.d/checkpoint.conf"])
        else:
            cmds.append(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--home-dir",
                    "/var/lib/checkpoint",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "checkpoint",
                ]
            )
            cmds.append(["usermod", "-a", "-G", "gpio,dialout", "checkpoint"])
    if "/etc/udev/rules.d/99-checkpoint.rules" in changed:
        cmds.append(["udevadm", "control", "--reload"])
        cmds.append(["udevadm", "trigger"])
    if any(d.startswith("/etc/systemd/system/") for d in changed):
        cmds.append(["systemctl", "daemon-reload"])
    if MODULES_LOAD in changed:
        # Now, not only at the next boot: the unit resolves its DeviceAllow classes
        # when it (re)starts, so the drivers must be in before that.
        cmds.append(["modprobe", "-a", *load])
    if changed & {CHRONY_DROPIN, "/etc/chrony/conf.d/checkpoint.conf"}:
        # chronyd reads its refclocks and makes the socket only when it starts; a
        # chrony that is not running is left alone (try-restart).
        cmds.append(["systemctl", "try-restart", "chrony.service"])
    if not _enabled(root, "checkpoint.service"):
        cmds.append(["systemctl", "enable", "checkpoint.service"])
    return cmds


# -- the command ---------------------------------------------------------------------------


def _ask_tty(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} [y/N] no (not a terminal: pass --yes to accept)")
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def install(
    root: str | Path = "/",
    *,
    yes: bool = False,
    firmware: bool = True,
    program: str | None = None,
    assets: Path | None = None,
    ask: Callable[[str], bool] = _ask_tty,
    say: Callable[[str], None] = print,
    run: Callable[[list[str]], int] | None = None,
) -> int:
    """Install into `root`; returns the number of files changed (0: already installed)."""
    root = Path(root)
    real = root.resolve() == Path("/")
    if real and os.geteuid() != 0:
        raise InstallError("installing into / needs root: sudo checkpoint install")
    assets = assets or assets_dir()
    program = program or program_path()
    if program.startswith(("/home/", "/root/")):
        say(
            f"warning: {program} is under /home or /root, which the unit hides "
            "(ProtectHome=yes): install checkpoint under /opt or /usr/local instead"
        )
    changed = _install_files(root, assets, program, say)
    if firmware:
        changed |= _install_firmware(root, assets, yes, ask, say)
    else:
        say("firmware files not checked (--no-firmware)")
    load = modules((assets / "systemd/checkpoint.modules-load").read_text())
    _run_commands(plan_commands(root, changed, load), root, real, say, run or _run)
    if changed:
        say(f"{len(changed)} file(s) changed.")
        if real:
            say("Next: edit /etc/checkpoint/box.toml, then sudo systemctl restart checkpoint")
    else:
        say("nothing to change: already installed")
    return len(changed)


def _install_files(root: Path, assets: Path, program: str, say: Callable[[str], None]) -> set[str]:
    """Write the system files that differ; the destinations written."""
    changed: set[str] = set()
    for change in plan_files(root, assets, program):
        if not change.needed:
            if change.keep_existing and change.old != change.new:
                say(f"kept     {change.dest} (exists; yours)")
            continue
        write(root, change)
        changed.add(change.dest)
        say(f"{'created' if change.old is None else 'updated'}  {change.dest}")
    return changed


def _install_firmware(
    root: Path, assets: Path, yes: bool, ask: Callable[[str], bool], say: Callable[[str], None]
) -> set[str]:
    """Show the firmware files' changes and write them if the person agrees (or `yes`)."""
    fw, notes = plan_firmware(root, assets)
    for note in notes:
        say(note)
    pending = [c for c in fw if c.needed]
    if not pending:
        return set()
    for change in pending:
        say(diff(change).rstrip("\n"))
    if not (yes or ask("Apply these changes to the Raspberry Pi firmware files?")):
        say("firmware files left unchanged")
        return set()
    for change in pending:
        write(root, change)
        say(f"updated  {change.dest} (takes effect at the next boot)")
    return {change.dest for change in pending}


def _run_commands(
    commands: list[list[str]],
    root: Path,
    real: bool,
    say: Callable[[str], None],
    run: Callable[[list[str]], int],
) -> None:
    """Run the commands on the real system; under --root (or without the tool) say them."""
    have_systemctl = shutil.which("systemctl") is not None
    for cmd in commands:
        if real and (cmd[0] != "systemctl" or have_systemctl) and shutil.which(cmd[0]):
            say(f"running  {' '.join(cmd)}")
            rc = run(cmd)
            if rc != 0:
                raise InstallError(f"{' '.join(cmd)} failed with exit code {rc}")
        else:
            why = f"--root {root}" if not real else f"{cmd[0]} not found"
            say(f"not run ({why}): {' '.join(cmd)}")


def _run(cmd: list[str]) -> int:
    return subprocess.run(cmd, check=False).returncode
