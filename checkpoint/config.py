"""Box configuration: a TOML file → frozen dataclasses.

Every key is checked: an unknown key, a missing required key or a bad value is a
`ConfigError` that names the file, the key path and what is wrong, because a
marshal at dawn has no debugger. `examples/box.toml` documents every key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from checkpoint import pins
from checkpoint.contracts import DEFAULT_PREFIX
from checkpoint.errors import ConfigError
from checkpoint.tomltable import TableReader

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9_./-]{1,64}$")


@dataclass(frozen=True)
class InputConfig:
    """One beam or push-button input."""

    name: str
    pin: str
    source: str = "beam"
    active_low: bool = True
    pull: str = "up"
    min_break_ms: int = 10
    lockout_ms: int = 1000
    max_edges_per_s: int = 200


@dataclass(frozen=True)
class GpsConfig:
    port: str = "/dev/gps0"
    baudrate: int = 9600
    pps_pin: str = "GPIO18"
    pps_edge: str = "rising"
    convention: str = "after"


@dataclass(frozen=True)
class MqttConfig:
    broker: str = "mqtt://127.0.0.1:1883"
    prefix: str = DEFAULT_PREFIX
    keepalive_s: int = 15
    max_inflight: int = 32
    # Never-acked seqs sent ahead of HQ's ack (0: no limit): under a broker's queue.
    max_ahead: int = 500
    redeliver_after_s: int = 30
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    # Client certificate (CN = box id) for brokers that authenticate boxes by
    # certificate; key_file may be omitted when the key is in cert_file's PEM.
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class IndicatorConfig:
    """Optional status LED and passage buzzer on output pins (None: not fitted)."""

    led_pin: str | None = None
    buzzer_pin: str | None = None
    active_low: bool = False
    chirp_ms: int = 60


@dataclass(frozen=True)
class ControlConfig:
    """The daemon's control socket for marshal corrections ("" = control.sock beside the store)."""

    socket: str = ""


@dataclass(frozen=True)
class ChronyConfig:
    """Where the daemon sends chrony its locked time ("" = do not feed chrony)."""

    socket: str = "/run/chrony.checkpoint.sock"


@dataclass(frozen=True)
class IntegrityConfig:
    """Tamper evidence beyond the hash chain (optional)."""

    # Ed25519 private key (PEM) the box signs its chain head with, in its status
    # (needs `pip install checkpoint[sign]`); None: heads are published unsigned.
    sign_key: str | None = None


@dataclass(frozen=True)
class WebConfig:
    """The marshal's phone page (checkpoint/web): off unless enabled.

    `host` "127.0.0.1" serves only the box itself; "0.0.0.0" (or the Wi-Fi address)
    serves the marshal Wi-Fi. `pin_file` holds the PIN/password (>= 6 characters,
    chmod 600); it is required when enabled.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    pin_file: str = ""
    # The rally office's files on the box (absolute paths, both or neither): the page
    # then shows the cars due next and pre-fills each passage's predicted car.
    event: str = ""
    entries: str = ""


@dataclass(frozen=True)
class Config:
    box: str
    checkpoint: str
    store: str
    inputs: tuple[InputConfig, ...]
    gps: GpsConfig = field(default_factory=GpsConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    pin_factory: str = ""
    # Accept a pin factory without kernel edge timestamps (checkpoint.box.edges).
    allow_coarse_ticks: bool = False
    capture: str | None = None
    status_interval_s: int = 10
    # Where the control is ("Passo della Futa"), shown by HQ next to the id.
    place: str = ""
    clock: tuple[tuple[str, int | float], ...] = ()
    source: str = "<defaults>"
    indicator: IndicatorConfig = field(default_factory=IndicatorConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    chrony: ChronyConfig = field(default_factory=ChronyConfig)
    web: WebConfig = field(default_factory=WebConfig)


def default_inputs() -> tuple[InputConfig, ...]:
    """One beam on GPIO17, as wired in the README's table."""
    return (InputConfig(name="beam", pin="GPIO17"),)


class _Reader(TableReader):
    """A TableReader that also knows the Pi's pins."""

    def pin(self, key: str, default: Any = ...) -> str:
        """A GPIO pin name checked against the Pi's 40-pin header."""
        value = self.get(key, str, default)
        if value:
            why = pins.problem(value)
            if why:
                self.bad(key, why)
        return value


def _wire(pin: str) -> str:
    """The header's GPIO number: "BOARD11" and "GPIO17" are the same wire."""
    return pins.canonical(pin) or pin


def _inputs(raw: Any, file: str, errors: list[str]) -> tuple[InputConfig, ...]:
    if raw is None:
        return default_inputs()
    if not isinstance(raw, list) or not raw:
        errors.append(f"{file}: inputs must be a non-empty array of tables ([[inputs]])")
        return default_inputs()
    result = []
    for i, table in enumerate(raw):
        r = _Reader(table, f"inputs[{i}]", file, errors)
        name = r.get("name", str)
        if name and not _ID.match(name):
            r.bad("name", f"must be letters, digits, _.- (got {name!r})")
        item = InputConfig(
            name=name,
            pin=r.pin("pin"),
            source=r.get("source", str, "beam", choices=("beam", "manual")),
            active_low=r.get("active_low", bool, True),
            pull=r.get("pull", str, "up", choices=("up", "down", "floating")),
            min_break_ms=r.positive("min_break_ms", 10, lo=0, hi=10_000),
            lockout_ms=r.positive("lockout_ms", 1000, lo=0, hi=3_600_000),
            max_edges_per_s=r.positive("max_edges_per_s", 200, hi=100_000),
        )
        if item.lockout_ms and item.min_break_ms >= item.lockout_ms:
            # A break must end (min_break_ms) before the input may fire again
            # (lockout_ms); the other way round every car would be locked out.
            r.bad(
                "min_break_ms",
                f"{item.min_break_ms} must be shorter than lockout_ms ({item.lockout_ms})",
            )
        r.done()
        result.append(item)
    names = [i.name for i in result]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"{file}: inputs: duplicate name {', '.join(dupes)}")
    used: dict[str, str] = {}
    for i in result:
        key = _wire(i.pin)
        if key in used:
            errors.append(f"{file}: inputs: pin {i.pin} used twice (also {used[key]})")
        used.setdefault(key, i.pin)
    return tuple(result)


def _clock(table: Any, file: str, errors: list[str]) -> tuple[tuple[str, int | float], ...]:
    """[clock] overrides any ClockParams threshold by its field name (see clock.py)."""
    from dataclasses import fields

    from checkpoint.core.clock import ClockParams

    r = _Reader(table, "clock", file, errors)
    known = {f.name: f.type for f in fields(ClockParams)}
    r.asked.update(known)
    out = []
    for key in sorted(r.table):
        if key not in known:
            continue
        value = r.table.pop(key)
        is_float = known[key] in (float, "float")
        ok = isinstance(value, int | float) if is_float else isinstance(value, int)
        if isinstance(value, bool) or not ok or value < 0:
            want = "a non-negative number" if is_float else "a non-negative integer"
            r.bad(key, f"must be {want}, got {value!r}")
            continue
        out.append((key, float(value) if is_float else value))
    r.done()
    return tuple(out)


def _web(table: Any, file: str, errors: list[str]) -> WebConfig:
    """[web]: the marshal page. Never enabled without a PIN file."""
    w = _Reader(table, "web", file, errors)
    web = WebConfig(
        enabled=w.get("enabled", bool, False),
        host=w.get("host", str, WebConfig.host),
        port=w.positive("port", WebConfig.port, lo=1, hi=65_535),
        pin_file=w.get("pin_file", str, ""),
        event=w.get("event", str, ""),
        entries=w.get("entries", str, ""),
    )
    if bool(web.event) != bool(web.entries):
        w.bad("event" if not web.event else "entries", "give event and entries together")
    for key in ("event", "entries"):
        path = getattr(web, key)
        if path and not path.startswith("/"):
            w.bad(key, f"must be an absolute path, got {path!r}")
    if not web.host:
        w.bad("host", "must be an address such as 127.0.0.1 or 0.0.0.0")
    if web.enabled and not web.pin_file:
        # Anyone on the marshal Wi-Fi can reach the page: never serve it without a PIN.
        w.bad("pin_file", "is required when web.enabled = true")
    if web.pin_file and not web.pin_file.startswith("/"):
        # The daemon runs from another folder than the one the config was written in.
        w.bad("pin_file", f"must be an absolute path, got {web.pin_file!r}")
    w.done()
    return web


def _box(table: Any, file: str, errors: list[str]) -> tuple[str, str, int, str]:
    """[box]: (id, checkpoint, status_interval_s, place)."""
    box = _Reader(table, "box", file, errors)
    box_id = box.get("id", str)
    if box_id and not _ID.match(box_id):
        box.bad("id", f"must be 1-64 of letters, digits, _.- (got {box_id!r})")
    checkpoint = box.get("checkpoint", str)
    if checkpoint and not _ID.match(checkpoint):
        box.bad("checkpoint", f"must be 1-64 of letters, digits, _.- (got {checkpoint!r})")
    status_interval = box.positive("status_interval_s", 10, hi=3600)
    place = box.get("place", str, "").strip()
    if len(place) > 64 or not place.isprintable():
        box.bad("place", "must be a place name of at most 64 printable characters")
        place = ""
    box.done()
    return box_id, checkpoint, status_interval, place


def _gps(table: Any, file: str, errors: list[str]) -> GpsConfig:
    g = _Reader(table, "gps", file, errors)
    gps = GpsConfig(
        port=g.get("port", str, GpsConfig.port),
        baudrate=g.positive("baudrate", GpsConfig.baudrate, lo=300, hi=921_600),
        pps_pin=g.pin("pps_pin", GpsConfig.pps_pin),
        pps_edge=g.get("pps_edge", str, "rising", choices=("rising", "falling")),
        convention=g.get("convention", str, "after", choices=("after", "before")),
    )
    g.done()
    return gps


def _mqtt(table: Any, file: str, errors: list[str]) -> MqttConfig:
    m = _Reader(table, "mqtt", file, errors)
    mqtt = MqttConfig(
        broker=m.get("broker", str, MqttConfig.broker),
        prefix=m.get("prefix", str, MqttConfig.prefix),
        keepalive_s=m.positive("keepalive_s", 15, lo=2, hi=600),
        max_inflight=m.positive("max_inflight", 32, hi=1000),
        max_ahead=m.positive("max_ahead", MqttConfig.max_ahead, lo=0, hi=1_000_000),
        redeliver_after_s=m.positive("redeliver_after_s", 30, hi=86_400),
        username=m.get("username", str, None),
        password_file=m.get("password_file", str, None),
        ca_file=m.get("ca_file", str, None),
        cert_file=m.get("cert_file", str, None),
        key_file=m.get("key_file", str, None),
    )
    if not _TOPIC_PREFIX.match(mqtt.prefix) or "+" in mqtt.prefix or "#" in mqtt.prefix:
        m.bad("prefix", f"must be a plain topic prefix without wildcards (got {mqtt.prefix!r})")
    if not mqtt.broker.startswith(("mqtt://", "mqtts://")):
        m.bad("broker", f"must be mqtt://host:port or mqtts://host:port (got {mqtt.broker!r})")
    if "@" in mqtt.broker.split("://", 1)[-1].split("/", 1)[0]:
        # Never echo it: the part before @ is a password. config check prints the URL.
        m.bad("broker", "must not hold credentials; use mqtt.username and password_file")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(mqtt, key) and not mqtt.broker.startswith("mqtts://"):
            m.bad(key, f"needs a TLS broker (mqtts://), but broker is {mqtt.broker!r}")
    if mqtt.key_file and not mqtt.cert_file:
        m.bad("key_file", "is set without mqtt.cert_file")
    m.done()
    return mqtt


def _indicator(
    table: Any, inputs: tuple[InputConfig, ...], gps: GpsConfig, file: str, errors: list[str]
) -> IndicatorConfig:
    """[indicator]: output pins, none on a pin the daemon reads."""
    ind = _Reader(table, "indicator", file, errors)
    indicator = IndicatorConfig(
        led_pin=ind.pin("led_pin", "") or None,
        buzzer_pin=ind.pin("buzzer_pin", "") or None,
        active_low=ind.get("active_low", bool, False),
        chirp_ms=ind.positive("chirp_ms", 60, lo=5, hi=2000),
    )
    # An output on a pin the daemon reads would fight the sensor (or short it).
    taken = {_wire(i.pin): f"input {i.name}" for i in inputs} | {_wire(gps.pps_pin): "gps.pps_pin"}
    for key in ("led_pin", "buzzer_pin"):
        pin = getattr(indicator, key)
        if pin is not None and _wire(pin) in taken:
            ind.bad(key, f"{pin} is already used by {taken[_wire(pin)]}")
        if pin is not None:
            taken[_wire(pin)] = f"indicator.{key}"
    ind.done()
    return indicator


def _socket(table: Any, section: str, default: str, file: str, errors: list[str]) -> str:
    """[control] or [chrony]: `socket`, an absolute path or empty."""
    r = _Reader(table, section, file, errors)
    path = r.get("socket", str, default)
    if path and not path.startswith("/"):
        # The daemon and the CLI run from different folders: only an absolute path
        # names the same socket for both.
        r.bad("socket", f"must be an absolute path or empty, got {path!r}")
    r.done()
    return path


def _one(top: _Reader, section: str, key: str, kind: type, default: Any) -> Any:
    """A section that holds a single key."""
    r = _Reader(top.get(section, dict, {}), section, top.file, top.errors)
    value = r.get(key, kind, default)
    r.done()
    return value


def parse(data: dict[str, Any], file: str = "<config>") -> Config:
    """Turn an already-parsed TOML document into a `Config`, checking every key.

    Raises one ConfigError listing every problem (one per line, in file order of
    sections), each naming the file and the key.
    """
    errors: list[str] = []
    top = _Reader(data, "", file, errors)
    top.asked.add("inputs")
    box_id, checkpoint, status_interval, place = _box(top.get("box", dict), file, errors)
    store_path = _one(top, "store", "path", str, "/var/lib/checkpoint/checkpoint.db")
    gpio = _Reader(top.get("gpio", dict, {}), "gpio", file, errors)
    pin_factory = gpio.get("pin_factory", str, "")
    allow_coarse_ticks = gpio.get("allow_coarse_ticks", bool, False)
    gpio.done()
    gps = _gps(top.get("gps", dict, {}), file, errors)
    mqtt = _mqtt(top.get("mqtt", dict, {}), file, errors)
    capture = _one(top, "record", "capture", str, "") or None
    clock = _clock(top.get("clock", dict, {}), file, errors)
    inputs = _inputs(top.table.pop("inputs", None), file, errors)
    if _wire(gps.pps_pin) in {_wire(i.pin) for i in inputs}:
        errors.append(f"{file}: gps.pps_pin {gps.pps_pin} is also an input's pin")
    indicator = _indicator(top.get("indicator", dict, {}), inputs, gps, file, errors)
    control = _socket(top.get("control", dict, {}), "control", "", file, errors)
    chrony = _socket(top.get("chrony", dict, {}), "chrony", ChronyConfig.socket, file, errors)
    sign_key = _one(top, "integrity", "sign_key", str, "") or None
    web = _web(top.get("web", dict, {}), file, errors)
    top.done()
    if errors:
        raise ConfigError("\n".join(errors), problems=errors)
    return Config(
        box=box_id,
        checkpoint=checkpoint,
        store=store_path,
        inputs=inputs,
        gps=gps,
        mqtt=mqtt,
        pin_factory=pin_factory,
        allow_coarse_ticks=allow_coarse_ticks,
        capture=capture,
        status_interval_s=status_interval,
        place=place,
        clock=clock,
        source=file,
        indicator=indicator,
        control=ControlConfig(socket=control),
        integrity=IntegrityConfig(sign_key=sign_key),
        chrony=ChronyConfig(socket=chrony),
        web=web,
    )


def load(path: str | Path) -> Config:
    """Read and check a config file; relative store/capture paths are taken from its folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    cfg = parse(data, str(path))
    base = path.resolve().parent
    resolved = {"store": str(base / cfg.store)}
    if cfg.capture:
        resolved["capture"] = str(base / cfg.capture)
    return replace(cfg, **resolved)
