"""The public contracts between a box and HQ, in one place: topics, limits, the event's
bytes and how a received event is checked.

Everything here is documented in the README and versioned (`EVENT_SCHEMA`): extend it,
never rename it. Box, HQ, the simulator and the benchmarks build topic names, check
numbers and serialise events through this module, so the two ends cannot drift apart
(the status once lost its `chain` field that way).

Topics, all under one prefix (`[mqtt] prefix`, default "rally"):

    {prefix}/{box}/event    box → HQ   one event (`checkpoint/event/1`), QoS 1
    {prefix}/{box}/status   box → HQ   retained status (and the `lost` will)
    {prefix}/{box}/hwm      box → box  retained high-water mark of the box's numbering
    {prefix}/{box}/ack      HQ → box   retained `{"store","upto","head"}`
    {prefix}/{box}/cmd      HQ → box   `{"cmd":"resend","store","from","to"}`
    {prefix}/{box}/hqfix    HQ → box   HQ's corrections for the marshal page (hqfix.py)

Imports only `checkpoint` (schema names), `errors` and `core.chain` (a shared module:
docs/architecture.md).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from checkpoint import EVENT_SCHEMA
from checkpoint.core import chain
from checkpoint.errors import CheckpointError, CommandError

DEFAULT_PREFIX = "rally"

# -- limits ------------------------------------------------------------------------------

MAX_CAR = 16  # characters of a car number (assign, hqfix, HQ's corrections)
MAX_REASON = 200  # characters of a void's reason
MAX_SEQ = 2**53  # beyond this JSON numbers stop being exact integers
MAX_STORE_ID = 128  # characters of a store id HQ accepts
UTC_MIN_NS = int(_dt.datetime(2019, 1, 1, tzinfo=_dt.UTC).timestamp()) * 10**9
UTC_MAX_NS = int(_dt.datetime(2080, 1, 1, tzinfo=_dt.UTC).timestamp()) * 10**9


# An integer and not a bool: a True where a seq or tick belongs is a bug, not a 1. Defined
# in the chain (which checks seqs and cannot import this module, built on it).
is_int = chain.is_int


# -- topics ------------------------------------------------------------------------------

EVENT, STATUS, ACK, CMD, HWM, HQFIX = "event", "status", "ack", "cmd", "hwm", "hqfix"
LOST = b'{"state":"lost"}'  # the box's will, retained on its status topic


def check_prefix(prefix: str) -> str:
    """A topic prefix: non-empty, no wildcards, no leading or trailing slash."""
    if not prefix or any(c in prefix for c in "+#\0") or prefix[0] == "/" or prefix[-1] == "/":
        raise CommandError(f"topic prefix {prefix!r} is not usable (e.g. rally or rally/2024)")
    return prefix


@dataclass(frozen=True, slots=True)
class Topics:
    """One box's topics: `Topics("rally", "box07").event == "rally/box07/event"`."""

    prefix: str
    box: str

    def of(self, kind: str) -> str:
        return f"{self.prefix}/{self.box}/{kind}"

    @property
    def event(self) -> str:
        return self.of(EVENT)

    @property
    def status(self) -> str:
        return self.of(STATUS)

    @property
    def ack(self) -> str:
        return self.of(ACK)

    @property
    def cmd(self) -> str:
        return self.of(CMD)

    @property
    def hwm(self) -> str:
        """The box's own retained high-water mark: the highest seq it ever published."""
        return self.of(HWM)

    @property
    def hqfix(self) -> str:
        """HQ's corrections of this box's passages, for the marshal page (hqfix.py)."""
        return self.of(HQFIX)

    def box_subscriptions(self) -> list[tuple[str, int]]:
        """What a box subscribes to (QoS 1): HQ's ack, cmd and hqfix, and its own hwm."""
        return [(self.ack, 1), (self.cmd, 1), (self.hwm, 1), (self.hqfix, 1)]


def all_boxes(prefix: str, kind: str) -> str:
    """The subscription pattern for `kind` of every box: `{prefix}/+/{kind}`."""
    return f"{prefix}/+/{kind}"


def hq_subscriptions(prefix: str) -> list[tuple[str, int]]:
    """What HQ's collector subscribes to (QoS 1): every box's events and status."""
    return [(all_boxes(prefix, EVENT), 1), (all_boxes(prefix, STATUS), 1)]


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(box, kind) of `{prefix}/{box}/{kind}`, or None for a topic not of this shape."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    return parts[0], parts[1]


# -- the bytes on the wire ---------------------------------------------------------------


def event_text(event: dict[str, Any]) -> str:
    """The one serialisation of an event, as published and as stored: keys in the order
    the producer built them, no spaces, ASCII only, and no NaN (not JSON: HQ refuses it).
    Raises ValueError for a NaN or infinity."""
    return json.dumps(event, separators=(",", ":"), allow_nan=False)


def event_bytes(event: dict[str, Any]) -> bytes:
    """`event_text` as the payload published on `{prefix}/{box}/event`."""
    return event_text(event).encode()


def message_bytes(doc: dict[str, Any]) -> bytes:
    """A status, hwm, ack or cmd message: compact JSON, as every end has always sent it."""
    return json.dumps(doc, separators=(",", ":")).encode()


# -- a received event --------------------------------------------------------------------


class Rejected(CheckpointError):
    """An input that cannot be stored as an event; `reason` is a short stable tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Parsed:
    """An event whose identity (box, store, seq) is sound.

    `quarantine` is set (a reason tag) when its content is not: it is still
    stored, because it holds its seq and the box would otherwise resend it
    forever, but it never enters export or results, and it is also a reject.
    """

    event: dict[str, Any]
    text: str
    quarantine: str | None = None
    detail: str = ""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_object(payload: bytes) -> tuple[dict[str, Any], str]:
    """A JSON object and its text; Rejected (bad_utf8, bad_json, not_object) otherwise."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Rejected("bad_utf8", str(err)) from None
    try:
        obj = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise Rejected("bad_json", str(err)[:200]) from None
    if not isinstance(obj, dict):
        raise Rejected("not_object", f"JSON {type(obj).__name__}, expected an object")
    return obj, text


_REQUIRED: dict[str, dict[str, type]] = {
    "passage": {
        "checkpoint": str,
        "input": str,
        "source": str,
        "mono_ns": int,
        "utc_ns": int,
        "utc": str,
        "clock": str,
        "uncertainty_ns": int,
    },
    "restamp": {"ref_seq": int, "utc_ns": int, "utc": str, "clock": str, "uncertainty_ns": int},
    "assign": {"ref_seq": int, "car": str},
    "void": {"ref_seq": int, "reason": str},
}


def content_problem(ev: dict[str, Any]) -> tuple[str, str] | None:
    """Why a known event type's content is unusable, or None. Unknown types pass."""
    required = _REQUIRED.get(ev["type"])
    if required is None:
        return None
    for name, typ in required.items():
        if name not in ev or ev[name] is None:
            return "missing_field", name
        v = ev[name]
        ok = is_int(v) if typ is int else isinstance(v, typ)
        if not ok:
            return "bad_type", f"{name}={v!r}"
    if "by" in ev and not isinstance(ev["by"], str):
        return "bad_type", f"by={ev['by']!r}"
    if "utc_ns" in required and not UTC_MIN_NS <= ev["utc_ns"] < UTC_MAX_NS:
        return "bad_time", f"utc_ns={ev['utc_ns']} outside 2019..2080"
    if "uncertainty_ns" in required and ev["uncertainty_ns"] < 0:
        return "bad_type", f"uncertainty_ns={ev['uncertainty_ns']} is negative"
    if "ref_seq" in required and not 1 <= ev["ref_seq"] < ev["seq"]:
        return "bad_ref", f"ref_seq={ev['ref_seq']} must be 1..seq-1"
    if ev["type"] == "assign":
        car = ev["car"].strip()
        if not (1 <= len(car) <= MAX_CAR) or not car.isprintable():
            return "bad_type", f"car={ev['car']!r}"
    return None


def parse_event(topic_box: str, payload: bytes) -> Parsed:
    """Validate one event payload published on `{prefix}/{topic_box}/event`.

    Raises Rejected when the identity cannot be trusted (not JSON, unknown
    schema, box differs from the topic, store/seq/type missing or ill-typed,
    seq < 1); such input is only a reject. Otherwise returns Parsed, with
    `quarantine` set if the content is bad (absurd time, missing field).
    """
    ev, text = load_object(payload)
    schema = ev.get("schema")
    if schema != EVENT_SCHEMA:
        raise Rejected("unknown_schema", f"schema={schema!r}")
    for name in ("box", "store", "type"):
        if name not in ev or ev[name] is None:
            raise Rejected("missing_field", name)
        if not isinstance(ev[name], str) or not ev[name]:
            raise Rejected("bad_type", f"{name}={ev[name]!r}")
    if ev["box"] != topic_box:
        raise Rejected("box_mismatch", f"payload box {ev['box']!r} on topic of {topic_box!r}")
    if len(ev["store"]) > MAX_STORE_ID:
        raise Rejected("bad_type", f"store id longer than {MAX_STORE_ID}")
    seq = ev.get("seq")
    if seq is None:
        raise Rejected("missing_field", "seq")
    if not is_int(seq):
        raise Rejected("bad_type", f"seq={seq!r}")
    if not 1 <= seq <= MAX_SEQ:
        raise Rejected("bad_seq", f"seq={seq}")
    problem = content_problem(ev)
    if problem is not None:
        return Parsed(ev, text, quarantine=problem[0], detail=problem[1])
    if chain.is_sealed(ev):
        bad_seal = chain.seal_problem(ev)
        if bad_seal is not None:
            return Parsed(ev, text, quarantine="chain_hash", detail=bad_seal)
    return Parsed(ev, text)
