"""Judging a rally: the boxes' passages against the exact truth. Pure: no I/O.

Matching is per box and input, on the kernel tick (`mono_ns`) of the passage's
leading edge, which in the simulator is exactly the truth's tick: so a wrong UTC
shows up as a timing error of a matched passage, never as a missing+false pair.
A passage is matched to the truth nearest in tick within `tolerance_ns` (0.5 s;
two cars at one input are always more than the 1 s lockout apart); the nearest
passage of a truth is its match, further ones are duplicates. Then

* missing    expected truths without a passage (lost by the system);
* false      passages with no truth near them (invented by the system);
* duplicates the same (box, store, seq) more than once, or several passages for
             one truth;
* blind      truths the system could not see (the sim never delivered their edges:
             box process down, dead sensor); reported, not counted as missing;
* untimed    car × control pairs with no passage on any input there (what the
             rally's results will lack), blind ones included;
* coarse     matched passages that end (restamps applied) at `unsynced` or `nmea`
             grade on a box that locked: the box should have re-stamped them.

Errors are integer ns: passage `utc_ns` (restamps applied) minus the truth's UTC of
the leading edge. Coverage is the share of matched passages with
|error| <= `uncertainty_ns`: an honest error bound covers every one.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TOLERANCE_NS = 500_000_000
_COARSE = ("unsynced", "nmea")


def percentile(values: list[int], p: float) -> int | None:
    """Nearest-rank percentile of integers (no interpolation, no float in the result)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-int(p * len(s)) // 100) - 1))
    return s[k]


def fold_events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A box's event stream → one row per passage with its corrections applied.

    Used on `checkpoint replay` output; HQ's export already gives such rows. A
    restamp replaces the stamp (keeping the original in `orig_utc_ns`), the latest
    assign sets `car`, a void sets `void`.
    """
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for ev in events:
        kind = ev.get("type")
        if kind == "passage":
            key = (ev["box"], ev["store"], ev["seq"])
            rows[key] = {
                **{k: ev.get(k) for k in ("box", "store", "seq", "checkpoint", "input", "source")},
                **{k: ev.get(k) for k in ("mono_ns", "utc_ns", "utc", "clock", "uncertainty_ns")},
                "car": None,
                "void": False,
                "restamped": False,
                "orig_utc_ns": None,
            }
            continue
        ref = rows.get((ev.get("box"), ev.get("store"), ev.get("ref_seq")))
        if ref is None:
            continue
        if kind == "restamp":
            if not ref["restamped"]:
                ref["orig_utc_ns"] = ref["utc_ns"]
            ref.update({k: ev[k] for k in ("utc_ns", "utc", "clock", "uncertainty_ns")})
            ref["restamped"] = True
        elif kind == "assign":
            ref["car"] = ev.get("car")
        elif kind == "void":
            ref["void"] = True
    return list(rows.values())


@dataclass
class Verdict:
    """The judged rally; `ok` is True only if nothing was lost, invented or doubled."""

    expected: int = 0
    received: int = 0
    matched: int = 0
    missing: int = 0
    duplicates: int = 0
    false: int = 0
    blind: int = 0
    untimed: int = 0
    coarse: int = 0
    voided: int = 0
    restamped: int = 0
    covered: int = 0
    wrong_car: int = 0
    unassigned: int | None = None  # passages without a car, once a marshal has assigned
    errors: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    clocks: Counter[str] = field(default_factory=Counter)
    by_box: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: (box, store, seq) of every matched passage → the car it truly was.
    matches: dict[tuple[str, str, int], str] = field(default_factory=dict)
    #: With [regularity]: HQ's automatic identification and results vs the truth
    #: (`sim.rallyoffice.Figures.as_dict`), and the lines to print (figures, top).
    identification: dict[str, Any] | None = None
    office_text: str = ""

    @property
    def ok(self) -> bool:
        wrong_ids = (self.identification or {}).get("wrongly_identified", 0)
        return (
            self.missing == 0
            and self.false == 0
            and self.duplicates == 0
            and self.coarse == 0
            and not wrong_ids
        )

    @property
    def coverage(self) -> float | None:
        return self.covered / self.matched if self.matched else None

    def note(self, what: str, text: str) -> None:
        if len(self.examples[what]) < 5:
            self.examples[what].append(text)

    def as_dict(self) -> dict[str, Any]:
        """The verdict as one JSON-able object (`--json`)."""
        abs_err = [abs(e) for e in self.errors]
        lat = self.latencies_ns
        return {
            "ok": self.ok,
            "expected": self.expected,
            "received": self.received,
            "matched": self.matched,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "false": self.false,
            "blind": self.blind,
            "untimed": self.untimed,
            "coarse": self.coarse,
            "voided": self.voided,
            "restamped": self.restamped,
            "wrong_car": self.wrong_car,
            "unassigned": self.unassigned,
            "identification": self.identification,
            "error_ns": {
                "p50": percentile(abs_err, 50),
                "p99": percentile(abs_err, 99),
                "max": max(abs_err, default=None),
                "mean_signed": (sum(self.errors) // len(self.errors)) if self.errors else None,
            },
            "coverage": self.coverage,
            "latency_ms": {
                "p50": _ms(percentile(lat, 50)),
                "p99": _ms(percentile(lat, 99)),
                "max": _ms(max(lat, default=None)),
            },
            "clocks": dict(self.clocks),
            "boxes": self.by_box,
            "examples": {k: v for k, v in self.examples.items() if v},
        }


def _ms(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def judge(
    truth: Iterable[Mapping[str, Any]],
    rows: Iterable[Mapping[str, Any]],
    *,
    blind: Collection[tuple[str, str, str]] = (),
    sent_wall_ns: Mapping[tuple[str, str, str], int] | None = None,
    received_wall_ns: Mapping[tuple[str, str, int], int] | None = None,
    tolerance_ns: int = TOLERANCE_NS,
    locked: Collection[str] | None = None,
) -> Verdict:
    """Judge passages (`rows`, HQ export shape) against `truth` (TruthPassage dicts).

    `blind` holds truth keys (box, input, car) whose edges never reached a box.
    `sent_wall_ns` (truth key → wall clock when the sim sent the leading edge) and
    `received_wall_ns` ((box, store, seq) → wall clock HQ received it) give latency.
    `locked` names the boxes whose clock locked (None: a box with any passage at
    locked grade did): their passages must not end at `unsynced` or `nmea` grade.
    """
    v = Verdict()
    truths = list(truth)
    live_rows = _live_rows(v, rows)
    claims = _claims(v, truths, live_rows, tolerance_ns)
    truth_by_key = {(t["box"], t["input"], t["car"]): t for t in truths}
    timed: set[tuple[str, str]] = set()
    for key, cl in claims.items():
        t = truth_by_key[key]
        for _, extra in cl[1:]:
            v.duplicates += 1
            v.note("duplicates", f"{key[0]} {key[1]} car {key[2]}: seq {extra['seq']} again")
        _score(v, t, cl[0][1], sent_wall_ns, received_wall_ns)
        timed.add((t["checkpoint"], t["car"]))
    _expected(v, truths, claims, blind)
    v.untimed = len({(t["checkpoint"], t["car"]) for t in truths} - timed)
    if locked is None:
        locked = {r["box"] for r in live_rows if r.get("clock") == "locked"}
    _coarse(v, claims, locked)
    return v


#: truth key (box, input, car) → the rows matched to it, (|error|, row), best first.
_Claims = dict[tuple[str, str, str], list[tuple[int, Mapping[str, Any]]]]


def _live_rows(v: Verdict, rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows once each and not voided; counts the duplicates and the voided."""
    seen: Counter[tuple[str, str, int]] = Counter()
    live_rows = []
    for r in rows:
        ident = (r["box"], r["store"], r["seq"])
        seen[ident] += 1
        if seen[ident] > 1:
            v.duplicates += 1
            v.note("duplicates", f"{r['box']} store {str(r['store'])[:8]} seq {r['seq']} twice")
            continue
        if r.get("void"):
            v.voided += 1
            continue
        live_rows.append(r)
    v.received = len(live_rows)
    return live_rows


def _claims(
    v: Verdict,
    truths: list[Mapping[str, Any]],
    live_rows: list[Mapping[str, Any]],
    tolerance_ns: int,
) -> _Claims:
    """Each row claims the true passage nearest its tick on its input; one that is
    further than `tolerance_ns` from every true passage is false."""
    by_input: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for t in truths:
        by_input[(t["box"], t["input"])].append(t)
    for lst in by_input.values():
        lst.sort(key=lambda t: t["tick"])
    claims: _Claims = defaultdict(list)
    for r in live_rows:
        cands = by_input.get((r["box"], r["input"]), [])
        best = _nearest(cands, r["mono_ns"])
        if best is None or abs(best["tick"] - r["mono_ns"]) > tolerance_ns:
            v.false += 1
            v.note("false", f"{r['box']} {r['input']} seq {r['seq']} at {r.get('utc')}")
            _box(v, r["box"])["false"] += 1
            continue
        key = (best["box"], best["input"], best["car"])
        claims[key].append((abs(best["tick"] - r["mono_ns"]), r))
    for cl in claims.values():
        cl.sort(key=lambda c: (c[0], c[1]["seq"]))
    return claims


def _expected(
    v: Verdict,
    truths: list[Mapping[str, Any]],
    claims: _Claims,
    blind: Collection[tuple[str, str, str]],
) -> None:
    """Count the passages a box could see (not blind) and those no row claimed."""
    for t in truths:
        key = (t["box"], t["input"], t["car"])
        b = _box(v, t["box"])
        if not t.get("detectable", True) or key in blind:
            v.blind += 1
            b["blind"] += 1
            continue
        v.expected += 1
        b["expected"] += 1
        if key not in claims:
            v.missing += 1
            b["missing"] += 1
            v.note("missing", f"{t['box']} {t['input']} car {t['car']} (tick {t['tick']})")


def _coarse(v: Verdict, claims: _Claims, locked: Collection[str]) -> None:
    """A passage of a box whose clock locked must not be left at a coarse grade."""
    for cl in claims.values():
        r = cl[0][1]
        if r["box"] in locked and r.get("clock") in _COARSE:
            v.coarse += 1
            _box(v, r["box"])["coarse"] += 1
            v.note("coarse", f"{r['box']} {r['input']} seq {r['seq']} left at {r.get('clock')}")


def _box(v: Verdict, box: str) -> dict[str, Any]:
    return v.by_box.setdefault(
        box,
        {
            "expected": 0,
            "matched": 0,
            "missing": 0,
            "false": 0,
            "blind": 0,
            "coarse": 0,
            "max_error_ns": 0,
        },
    )


def _nearest(cands: list[Mapping[str, Any]], tick: int) -> Mapping[str, Any] | None:
    """The truth whose tick is nearest `tick` (cands sorted by tick)."""
    lo, hi = 0, len(cands)
    while lo < hi:
        mid = (lo + hi) // 2
        if cands[mid]["tick"] < tick:
            lo = mid + 1
        else:
            hi = mid
    near = [cands[i] for i in (lo - 1, lo) if 0 <= i < len(cands)]
    return min(near, key=lambda t: abs(t["tick"] - tick), default=None)


def _score(
    v: Verdict,
    t: Mapping[str, Any],
    r: Mapping[str, Any],
    sent: Mapping[tuple[str, str, str], int] | None,
    received: Mapping[tuple[str, str, int], int] | None,
) -> None:
    v.matched += 1
    v.matches[(r["box"], r["store"], r["seq"])] = t["car"]
    b = _box(v, t["box"])
    b["matched"] += 1
    err = int(r["utc_ns"]) - int(t["utc_ns"])
    v.errors.append(err)
    b["max_error_ns"] = max(b["max_error_ns"], abs(err))
    unc = r.get("uncertainty_ns")
    if isinstance(unc, int) and abs(err) <= unc:
        v.covered += 1
    else:
        v.note(
            "uncovered",
            f"{r['box']} {r['input']} seq {r['seq']} ({r.get('clock')}): "
            f"error {err} ns > ±{unc} ns",
        )
    v.clocks[str(r.get("clock"))] += 1
    if r.get("restamped"):
        v.restamped += 1
    car = r.get("car")
    if car is not None and str(car) != t["car"]:
        v.wrong_car += 1
        v.note("wrong_car", f"{r['box']} seq {r['seq']}: car {car}, truly {t['car']}")
    key = (t["box"], t["input"], t["car"])
    if sent and received:
        s = sent.get(key)
        got = received.get((r["box"], r["store"], r["seq"]))
        if s is not None and got is not None:
            v.latencies_ns.append(got - s)


def render(v: Verdict, title: str = "") -> str:
    """The verdict as a few lines of text for a terminal."""
    d = v.as_dict()
    e, lat = d["error_ns"], d["latency_ms"]
    cov = "n/a" if d["coverage"] is None else f"{d['coverage']:.4f}"
    lines = []
    if title:
        lines.append(title)
    lines += [
        f"  passages: expected {v.expected}, received {v.received}, matched {v.matched}",
        f"  missing {v.missing}, duplicates {v.duplicates}, false {v.false}"
        f"  (blind {v.blind}: never reached a box; untimed car x control {v.untimed})",
        f"  timing error vs truth: p50 {_fmt_ns(e['p50'])}, p99 {_fmt_ns(e['p99'])}, "
        f"max {_fmt_ns(e['max'])}",
        f"  uncertainty coverage: {cov} ({v.covered}/{v.matched} within their stated bound)",
    ]
    if lat["p50"] is not None:
        lines.append(
            f"  edge-to-HQ latency: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"max {lat['max']:.1f} ms"
        )
    extra = []
    if v.restamped:
        extra.append(f"{v.restamped} restamped after lock")
    if v.coarse:
        extra.append(f"{v.coarse} left at unsynced/nmea grade on a box that locked")
    if v.unassigned is not None:
        extra.append(f"marshal: {v.wrong_car} wrong car, {v.unassigned} unassigned")
    if v.voided:
        extra.append(f"{v.voided} voided")
    extra.append("clock " + ", ".join(f"{k} {n}" for k, n in sorted(v.clocks.items())))
    lines.append("  " + "; ".join(extra))
    for box, b in sorted(v.by_box.items()):
        lines.append(
            f"    {box}: {b['matched']}/{b['expected']} matched, missing {b['missing']}, "
            f"false {b['false']}, blind {b['blind']}, max error {_fmt_ns(b['max_error_ns'])}"
        )
    for what, items in d["examples"].items():
        for text in items:
            lines.append(f"  {what}: {text}")
    if v.office_text:
        lines.append(v.office_text.rstrip("\n"))
    lines.append("  VERDICT: " + ("PASS, nothing lost or invented" if v.ok else "FAIL, see above"))
    return "\n".join(lines)


def _fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "n/a"
    if abs(ns) < 10_000:
        return f"{ns} ns"
    if abs(ns) < 10_000_000:
        return f"{ns / 1000:.1f} µs"
    if abs(ns) < 10_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.1f} s"


def to_json(v: Verdict, **extra: Any) -> str:
    """One JSON object: the verdict plus `extra` (scenario name, workdir ...)."""
    return json.dumps({**extra, **v.as_dict()}, sort_keys=False)
