"""Credentials for rehearsing against a secured broker (the shipped `broker/` config).

`python -m sim run --broker mqtts://HOST:8883 --hq-broker mqtts://HOST:8885
--credentials DIR` runs every box daemon as its own user (DIR/secrets/BOX.password)
and HQ's collector and the simulator's monitor as `hq` on HQ's own listener, all
verifying the broker's certificate against DIR/ca.crt. DIR is what
`broker/provision.py` makes; `--ca`, `--user` and `--password-file` override its
parts (HQ's user and password). The fleet bench takes the same options.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoint.errors import ConfigError
from checkpoint.support import read_secret
from sim.boxconfig import _q


@dataclass(frozen=True)
class Credentials:
    """Where each client's secrets are; None fields mean "not used"."""

    ca_file: str | None = None
    hq_user: str | None = None
    hq_password_file: str | None = None
    #: Folder of USER.password files (provision.py's DIR/secrets): one per box.
    secrets: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Credentials | None:
        """From `add_arguments`' options; None when none was given (a plain broker)."""
        d = args.credentials
        if d is None and not (args.ca or args.user or args.password_file):
            return None
        if d is not None and not d.is_dir():
            raise ConfigError(f"--credentials {d}: not a folder (provision.py --dir)")
        ca = args.ca or (str(d / "ca.crt") if d is not None else None)
        user = args.user or ("hq" if d is not None else None)
        pw = args.password_file
        if pw is None and d is not None and user is not None:
            pw = str(d / "secrets" / f"{user}.password")
        if pw is not None and user is None:
            raise ConfigError("--password-file needs --user")
        for what, path in (("CA", ca), ("HQ password", pw)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{what} file {path} does not exist")
        return cls(ca, user, pw, d / "secrets" if d is not None else None)

    def box_password_file(self, box: str) -> str | None:
        """The box's password file, or None without a credentials folder."""
        if self.secrets is None:
            return None
        path = self.secrets / f"{box}.password"
        if not path.is_file():
            raise ConfigError(
                f"no password for box {box}: {path} missing (provision.py passwd --dir ... {box})"
            )
        return str(path)

    def box_toml(self, box: str) -> list[str]:
        """Lines for the box's `[mqtt]` table."""
        lines = []
        pw = self.box_password_file(box)
        if pw is not None:
            lines += [f"username = {_q(box)}", f"password_file = {_q(pw)}"]
        if self.ca_file is not None:
            lines.append(f"ca_file = {_q(self.ca_file)}")
        return lines

    def box_link(self, box: str) -> dict[str, Any]:
        """`checkpoint.mqtt.Link` keyword arguments for an emulated box."""
        pw = self.box_password_file(box)
        return {
            "username": box if pw else None,
            "password": read_secret(pw, "box password") if pw else None,
            "ca_file": self.ca_file,
        }

    def hq_args(self) -> list[str]:
        """`checkpoint hq run` options."""
        out = []
        if self.hq_user is not None:
            out += ["--user", self.hq_user]
        if self.hq_password_file is not None:
            out += ["--password-file", self.hq_password_file]
        if self.ca_file is not None:
            out += ["--ca", self.ca_file]
        return out

    def hq_link(self) -> dict[str, Any]:
        """`checkpoint.mqtt.Link` keyword arguments for an HQ-side client (the monitor)."""
        pw = self.hq_password_file
        return {
            "username": self.hq_user,
            "password": read_secret(pw, "--password-file") if pw else None,
            "ca_file": self.ca_file,
        }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--credentials, --ca, --user, --password-file."""
    p.add_argument(
        "--credentials",
        type=Path,
        metavar="DIR",
        help="folder made by broker/provision.py: DIR/ca.crt, DIR/secrets/USER.password",
    )
    p.add_argument("--ca", metavar="FILE", help="CA certificate of the broker (mqtts://)")
    p.add_argument("--user", metavar="NAME", help="HQ's MQTT user (default with DIR: hq)")
    p.add_argument("--password-file", metavar="FILE", help="HQ's MQTT password file")
