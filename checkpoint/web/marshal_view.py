"""What the marshal's page shows, from the daemon's status snapshot and recent passages. Pure.

The page must answer "is this box ready?" at a glance, so the verdict is computed
here, once, from the same status dict the box publishes to HQ, and the page only
paints it. Every item is `ok`, `warn` (timing works, but look) or `bad` (fix it before
the first car); the box is ready when no item is bad.

Payloads are kept small for a slow phone on weak Wi-Fi: short keys, no counters that
change every second (so an unchanged box sends nothing), times as integer
milliseconds plus the UTC text to the hundredth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from checkpoint.core.readiness import BAD, OK, WARN, clock_level, input_problem

FIX_STALE_NS = 5 * 10**9  # no valid NMEA fix for this long: the GPS is not feeding the box
SNAPSHOT_STALE_NS = 5 * 10**9  # the daemon publishes a snapshot at least every second


def fmt_uncertainty(ns: object) -> str:
    """±uncertainty with two significant digits in µs, ms or s ("" when unknown)."""
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
        return ""
    for unit, scale in (("µs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)):
        if ns < 1000 * scale or unit == "s":
            v = ns / scale
            return f"±{v:.1f} {unit}" if v < 10 else f"±{v:.0f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def utc_hundredths(utc_ns: int) -> str:
    """HH:MM:SS.hh of a UTC instant, hundredths truncated as a timing display shows them."""
    s, ns = divmod(utc_ns, 1_000_000_000)
    day = s % 86_400
    return f"{day // 3600:02d}:{day // 60 % 60:02d}:{day % 60:02d}.{ns // 10_000_000:02d}"


def _item(key: str, label: str, level: str, text: str) -> dict[str, str]:
    return {"k": key, "l": label, "s": level, "t": text}


# Plain words a marshal can act on: what is happening, what to do, for how long.
COLD_START = "a cold start takes 1-5 minutes"


def _gps(st: Mapping[str, Any], now_ns: int) -> dict[str, str]:
    if st.get("gps_port") is False:
        return _item("gps", "GPS", BAD, "GPS not connected: check the GPS cable")
    fix = st.get("fix") if isinstance(st.get("fix"), Mapping) else {}
    last = fix.get("last_valid_mono_ns")
    if not isinstance(last, int):
        return _item("gps", "GPS", BAD, f"GPS is searching for satellites: {COLD_START}")
    if now_ns - last > FIX_STALE_NS:
        return _item("gps", "GPS", BAD, "GPS lost its satellites: give the antenna open sky")
    if st.get("pps_pulses") == 0:
        return _item("gps", "GPS", WARN, "GPS has a fix but sends no pulse: check the PPS wire")
    return _item("gps", "GPS", OK, "fix")


def lock_estimate(st: Mapping[str, Any]) -> str:
    """ "about 40 s" from the box's `lock_in_s` (PPS seconds the clock still needs)."""
    left = st.get("lock_in_s")
    if isinstance(left, bool) or not isinstance(left, int):
        return "about a minute"
    if left <= 2:
        return "a few seconds"
    return f"about {left} s"


def _clock(st: Mapping[str, Any]) -> dict[str, str]:
    state = st.get("clock")
    unc = fmt_uncertainty(st.get("uncertainty_ns"))
    detail = f"{state} {unc}".strip() if isinstance(state, str) else "unknown"
    if state == "locked":
        return _item("clock", "Clock", clock_level(st), f"locked to GPS {unc}".strip())
    if state == "holdover":
        return _item(
            "clock",
            "Clock",
            clock_level(st),
            f"GPS pulse lost: keeping time on the box's clock ({detail})",
        )
    # nmea is millisecond-grade at best and unsynced is the system clock: neither
    # times a regularity stage to the hundredth.
    if not st.get("pps_pulses"):
        return _item("clock", "Clock", BAD, f"waiting for the GPS time pulse ({detail})")
    return _item("clock", "Clock", BAD, f"GPS is locking: {lock_estimate(st)} ({detail})")


def _broker(st: Mapping[str, Any]) -> dict[str, str]:
    link = st.get("link")
    if link is True:
        return _item("broker", "Broker", OK, "connected")
    if link is False:
        return _item("broker", "Broker", WARN, "not connected: passages are kept on the box")
    return _item("broker", "Broker", WARN, "unknown")


def _inputs(st: Mapping[str, Any], blocked_s: Mapping[str, float]) -> list[dict[str, str]]:
    inputs = st.get("inputs") if isinstance(st.get("inputs"), Mapping) else {}
    out = []
    for name in sorted(inputs):
        i = inputs[name] if isinstance(inputs[name], Mapping) else {}
        # Every input by its configured name, in the same words: "beam clear",
        # "beam2 clear", "button clear" (not "BEAM aligned" beside "INPUT BEAM2 idle").
        label = name
        if i.get("fault"):
            out.append(_item(f"in:{name}", label, BAD, f"{name} flickers: check wiring, aim"))
        elif input_problem(i, blocked_s.get(name, 0.0)) == "blocked":
            out.append(_item(f"in:{name}", label, BAD, f"{name} blocked: aim it or clear it"))
        elif i.get("broken") is None:
            out.append(_item(f"in:{name}", label, WARN, "level unknown"))
        else:
            out.append(_item(f"in:{name}", label, OK, "clear"))
    return out


def _backlog(st: Mapping[str, Any]) -> dict[str, str]:
    unstored = st.get("unstored")
    if isinstance(unstored, int) and unstored > 0:
        return _item("backlog", "Backlog", BAD, f"{unstored} events not on the card")
    backlog = st.get("backlog")
    if not isinstance(backlog, int):
        return _item("backlog", "Backlog", WARN, "unknown")
    if backlog == 0:
        return _item("backlog", "Backlog", OK, "all at HQ")
    return _item("backlog", "Backlog", WARN, f"{backlog} not yet at HQ")


def readiness(
    status: Mapping[str, Any],
    now_mono_ns: int,
    blocked_s: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The page's status block: box, checkpoint, `ready`, items and alarm texts.

    `status` is the daemon's status dict (README "Status") plus `link` (broker
    connected) and `mono_ns` (when the snapshot was made), if the daemon provides
    them. `blocked_s` is, per input, how long it has been broken without a break
    (tracked by the server across snapshots, since one snapshot cannot tell a
    passing car from a misaligned beam).
    """
    if not status:
        item = _item("daemon", "Box", BAD, "starting: no status from the daemon yet")
        return {"box": "", "cp": "", "ready": False, "items": [item], "alarms": []}
    items = [_gps(status, now_mono_ns), _clock(status), _broker(status)]
    items += _inputs(status, blocked_s or {})
    items.append(_backlog(status))
    made = status.get("mono_ns")
    if isinstance(made, int) and now_mono_ns - made > SNAPSHOT_STALE_NS:
        items.insert(0, _item("daemon", "Box", BAD, "daemon not responding: status is old"))
    alarms = status.get("alarms") if isinstance(status.get("alarms"), Mapping) else {}
    texts = [str(alarms[k]) for k in sorted(alarms)]
    return {
        "box": str(status.get("box", "")),
        "cp": str(status.get("checkpoint", "")),
        "ready": not texts and all(i["s"] != BAD for i in items),
        "items": items,
        "alarms": texts,
    }


def passage_row(p: Mapping[str, Any]) -> dict[str, Any] | None:
    """One passage as the page needs it, or None if it is not a usable passage.

    `p` is a passage event with corrections applied (as `Store.passages()` rows):
    `seq`, `utc_ns`, `clock`, `uncertainty_ns`, `input`, and optionally `car`,
    `void`, `void_reason`.
    """
    seq, utc_ns = p.get("seq"), p.get("utc_ns")
    if isinstance(seq, bool) or not isinstance(seq, int):
        return None
    if isinstance(utc_ns, bool) or not isinstance(utc_ns, int):
        return None
    row: dict[str, Any] = {
        "seq": seq,
        "ms": utc_ns // 1_000_000,  # the browser derives local time of day from this
        "utc": utc_hundredths(utc_ns),
        "clk": p.get("clock") if isinstance(p.get("clock"), str) else "",
        "unc": fmt_uncertainty(p.get("uncertainty_ns")),
        "in": p.get("input") if isinstance(p.get("input"), str) else "",
    }
    car = p.get("car")
    if isinstance(car, str) and car:
        row["car"] = car
    if p.get("void"):
        row["void"] = str(p.get("void_reason") or "void")
    if isinstance(p.get("hq"), str) and p["hq"]:
        row["hq"] = p["hq"]  # HQ's correction of this passage (checkpoint.hqfix)
    return row


GROUP_MS = 2000  # one car crosses every input of a control within this


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per car at a control with several inputs (two beams, beam + button).

    Passages of *different* inputs within `GROUP_MS` of a group's first passage join
    it: the row keeps the first passage's time, lists the others in `also`, and
    `seqs` names every passage a car number or a void applies to.
    """
    out: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r["ms"], r["seq"])):
        g = out[-1] if out else None
        if (
            g is not None
            and row["ms"] - g["ms"] <= GROUP_MS
            and row["in"] not in {g["in"], *(a["in"] for a in g["also"])}
        ):
            g["seqs"].append(row["seq"])
            g["also"].append({k: row[k] for k in ("seq", "in", "utc", "ms")})
            if "car" not in g and "car" in row:
                g["car"] = row["car"]
            if "void" in g and "void" not in row:
                del g["void"]  # void only when every passage of the car is
            continue
        out.append({**row, "seqs": [row["seq"]], "also": []})
    return out


def passage_rows(passages: object, limit: int = 50) -> dict[int, dict[str, Any]]:
    """The newest `limit` rows (one per car: see `_grouped`), keyed by their first seq."""
    rows: list[dict[str, Any]] = []
    if not isinstance(passages, list | tuple):
        return {}
    for p in passages:
        if isinstance(p, Mapping):
            row = passage_row(p)
            if row is not None:
                rows.append(row)
    groups = _grouped(rows)[-limit:]
    return {g["seq"]: g for g in sorted(groups, key=lambda g: g["seq"])}
