#!/usr/bin/env python3
"""Make what the shipped broker configuration needs: a CA, the server certificate,
box client certificates and the Mosquitto password file with one user per box and HQ.

Standard library only, so it runs on HQ's machine before checkpoint is installed; it
calls the `openssl` and `mosquitto_passwd` commands (Debian: openssl, mosquitto).

    python3 broker/provision.py ca      --dir /etc/mosquitto/checkpoint
    python3 broker/provision.py server  --dir /etc/mosquitto/checkpoint --name hq.example.org
    python3 broker/provision.py passwd  --dir /etc/mosquitto/checkpoint hq box01 box02 ...
    python3 broker/provision.py client  --dir /etc/mosquitto/checkpoint box01 box02 ...

`passwd` adds or replaces users in DIR/passwd (and the user `hq` in DIR/hq-passwd too,
for HQ's own listener where several HQ clients connect at once). Each new password is
random (192 bits) and written to DIR/secrets/USER.password (mode 600): copy it to the box as its
`[mqtt] password_file` (or to HQ for `--password-file`) and delete it here if you like.
A password never appears on a command line (it would show in `ps`): plain
`user:password` lines go into a private temporary file that `mosquitto_passwd -U`
hashes in place (PBKDF2-SHA512).

Private keys and secrets are created with mode 600 and are never overwritten: delete
a file to make it again. Mosquitto drops to user `mosquitto` and must read passwd,
hq-passwd, acl and server.key: `chgrp mosquitto` them and `chmod 640`, as the README says.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The box id rule of checkpoint's config: also what keeps %u in ACL patterns harmless.
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HQ_USER = "hq"  # the ACL's HQ user; also written to HQ_PASSWD for HQ's own listener
HQ_PASSWD = "hq-passwd"
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class ProvisionError(Exception):
    """Something to tell the operator; exit 1."""


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        hint = (
            "apt-get install mosquitto"
            if name.startswith("mosquitto")
            else "apt-get install openssl"
        )
        raise ProvisionError(f"{name} not found: {hint}")
    return found


def _openssl(*args: str | Path) -> None:
    res = subprocess.run(
        [_tool("openssl"), *map(str, args)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise ProvisionError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def _fresh(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            raise ProvisionError(f"{p} exists; not overwriting it (delete it to make a new one)")


def _check_name(name: str) -> str:
    if not NAME.match(name):
        raise ProvisionError(f"user/box name {name!r}: use 1-64 letters, digits, _ . -")
    return name


def make_ca(d: Path, days: int = 3650) -> Path:
    """DIR/ca.key (600) and DIR/ca.crt, a self-signed CA for the rally's broker and boxes."""
    key, crt = d / "ca.key", d / "ca.crt"
    _fresh(key, crt)
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *EC, "-keyout", key, "-out", crt, "-days", str(days),
        "-subj", "/CN=checkpoint rally CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _private(key)
    return crt


def _sign(d: Path, key: Path, crt: Path, cn: str, ext: str, days: int) -> None:
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    if not ca_key.exists() or not ca_crt.exists():
        raise ProvisionError(f"no CA in {d}: run `provision.py ca --dir {d}` first")
    with tempfile.TemporaryDirectory() as tmp:
        csr, extfile = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        extfile.write_text(ext)
        _openssl("req", *EC, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        _private(key)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
            "-out", crt, "-days", str(days), "-extfile", extfile,
        )  # fmt: skip


def make_server(d: Path, names: list[str], days: int = 825) -> Path:
    """DIR/server.key (600) and DIR/server.crt for the host names / IPs clients connect to.

    Clients check the name they connect to against these (hostname verification),
    so list every name a box or HQ uses in its broker URL.
    """
    if not names:
        raise ProvisionError("server needs at least one --name (host name or IP address)")
    key, crt = d / "server.key", d / "server.crt"
    _fresh(key, crt)
    sans = []
    for n in names:
        ip = re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:]*", n) is not None
        sans.append(f"IP:{n}" if ip else f"DNS:{n}")
    ext = (
        f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
    )
    _sign(d, key, crt, names[0], ext, days)
    return crt


def make_client(d: Path, box: str, days: int = 825) -> Path:
    """DIR/clients/BOX.key (600) and BOX.crt with CN = BOX, for certificate login."""
    _check_name(box)
    out = d / "clients"
    out.mkdir(parents=True, exist_ok=True)
    key, crt = out / f"{box}.key", out / f"{box}.crt"
    _fresh(key, crt)
    ext = (
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
        "basicConstraints=CA:FALSE\n"
    )
    _sign(d, key, crt, box, ext, days)
    return crt


def _read_passwd(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                user, _, rest = line.partition(":")
                users[user] = rest
    return users


def set_passwords(d: Path, passwords: dict[str, str]) -> None:
    """Add or replace users in DIR/passwd, hashed by `mosquitto_passwd -U`."""
    for user in passwords:
        _check_name(user)
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        plain = Path(tmp) / "plain"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{u}:{p}\n" for u, p in passwords.items())
        res = subprocess.run(
            [_tool("mosquitto_passwd"), "-U", str(plain)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise ProvisionError(
                f"mosquitto_passwd -U failed: {(res.stderr or res.stdout).strip()}"
            )
        hashed = _read_passwd(plain)
    users = _read_passwd(d / "passwd") | hashed
    _write_passwd(d / "passwd", users)
    # HQ's listener (8885) knows HQ's users only: no box can log in there.
    hq = _read_passwd(d / HQ_PASSWD) | {u: h for u, h in hashed.items() if u == HQ_USER}
    _write_passwd(d / HQ_PASSWD, hq)


def _write_passwd(path: Path, users: dict[str, str]) -> None:
    tmp_path = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{u}:{h}\n" for u, h in users.items())
    os.replace(tmp_path, path)


def new_passwords(d: Path, users: list[str], password_file: Path | None = None) -> list[Path]:
    """Random passwords for `users` (or the one in `password_file`), saved to DIR/secrets."""
    chosen: dict[str, str] = {}
    for user in users:
        _check_name(user)
        if password_file is not None:
            chosen[user] = password_file.read_text().strip()
        else:
            chosen[user] = secrets.token_urlsafe(24)
        if not chosen[user] or ":" in chosen[user] or "\n" in chosen[user]:
            raise ProvisionError(f"password for {user} must be one line without ':'")
    out = d / "secrets"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    written = []
    for user, pw in chosen.items():
        p = out / f"{user}.password"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pw + "\n")
        written.append(p)
    set_passwords(d, chosen)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    p = argparse.ArgumentParser(prog="provision.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("ca", help="make the CA (ca.key, ca.crt)")
    c.add_argument("--days", type=int, default=3650)
    s = sub.add_parser("server", help="make the broker's certificate")
    s.add_argument("--name", action="append", default=[], help="host name or IP (repeat)")
    s.add_argument("--days", type=int, default=825)
    k = sub.add_parser("client", help="make client certificates (CN = box id)")
    k.add_argument("boxes", nargs="+")
    k.add_argument("--days", type=int, default=825)
    w = sub.add_parser("passwd", help="add/replace users in the password file")
    w.add_argument("users", nargs="+")
    w.add_argument("--password-file", type=Path, help="use this password instead of a random one")
    for q in (c, s, k, w):
        q.add_argument("--dir", type=Path, required=True, help="e.g. /etc/mosquitto/checkpoint")
    args = p.parse_args(argv)
    try:
        if args.cmd == "ca":
            print(make_ca(args.dir, args.days))
        elif args.cmd == "server":
            print(make_server(args.dir, args.name, args.days))
        elif args.cmd == "client":
            for box in args.boxes:
                print(make_client(args.dir, box, args.days))
        else:
            for path in new_passwords(args.dir, args.users, args.password_file):
                print(path)
    except ProvisionError as err:
        print(f"provision.py: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
