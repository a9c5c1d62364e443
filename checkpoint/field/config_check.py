"""`checkpoint config check`: every problem of a box config at once, files included.

`config.parse` already collects every key error. This adds what only the files
named in the config can tell: the marshal PIN file by the same rules `hq serve`
applies to its password (auth.load_secret: at least 6 characters, not readable by
group or others), the MQTT password and private keys (not readable by others), the
signing key. A marshal at dawn fixes them all in one go instead of one per run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from checkpoint import config as configmod
from checkpoint.config import Config
from checkpoint.errors import ConfigError


def _file_checks(cfg: Config) -> list[tuple[str, Callable[[], object]]]:
    from checkpoint.support import check_private, check_sign_key, read_secret
    from checkpoint.web.auth import load_secret

    checks: list[tuple[str, Callable[[], object]]] = []
    if cfg.web.pin_file:
        checks.append(("web.pin_file", lambda: load_secret(cfg.web.pin_file, "web.pin_file")))
    if cfg.mqtt.password_file:
        pw = cfg.mqtt.password_file
        checks.append(("mqtt.password_file", lambda: read_secret(pw, "mqtt.password_file")))
    if cfg.mqtt.key_file:
        checks.append(("mqtt.key_file", lambda: check_private(cfg.mqtt.key_file, "mqtt.key_file")))
    elif cfg.mqtt.cert_file:
        checks.append(
            (
                "mqtt.cert_file",
                lambda: check_private(cfg.mqtt.cert_file, "mqtt.cert_file (holds the private key)"),
            )
        )
    if cfg.mqtt.ca_file and not Path(cfg.mqtt.ca_file).is_file():
        ca = cfg.mqtt.ca_file

        def missing_ca() -> None:
            raise ConfigError(f"mqtt.ca_file {ca}: no such file")

        checks.append(("mqtt.ca_file", missing_ca))
    if cfg.integrity.sign_key:
        checks.append(("integrity.sign_key", lambda: check_sign_key(cfg.integrity.sign_key)))
    return checks


def check(path: str | Path) -> tuple[Config | None, list[str]]:
    """The parsed config (None if the keys are wrong) and every problem found."""
    try:
        cfg = configmod.load(path)
    except ConfigError as err:
        return None, err.problems
    problems = []
    for _key, run in _file_checks(cfg):
        try:
            run()
        except ConfigError as err:
            problems.append(f"{path}: {err}")
    return cfg, problems
