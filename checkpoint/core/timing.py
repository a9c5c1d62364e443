"""The pure heart of a box: raw input records in, box events out.

Records are exactly the capture file's records (`pps`, `nmea`, `edge`,
`sysclock`), so the daemon and `checkpoint replay` run this same code on the same
inputs and publish the same events. No I/O, no clock reads: time advances only
with the records' own `mono_ns` and explicit `advance(now_ns)` calls.

Raw and cooked time are kept apart: a passage keeps its leading edge's kernel tick
(`mono_ns`) and UTC is derived from the clock model. A passage stamped before the
clock locked is re-derived once it has, and a `restamp` event (own seq) tells HQ.

Every event is sealed into its store's hash chain as it is made (`checkpoint.core.chain`):
it carries `prev` (the previous event's `hash`, or the store's genesis) and its own
`hash`. The pipeline holds the chain head; the daemon starts it from the store's last
event (`Store.chain_head()`), replay from the genesis of the `--store` id.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from checkpoint import EVENT_SCHEMA
from checkpoint.config import InputConfig
from checkpoint.contracts import MAX_CAR, MAX_REASON, is_int
from checkpoint.core import chain
from checkpoint.core.burst import BurstMeter
from checkpoint.core.clock import ClockModel, ClockParams, ClockState, Stamp
from checkpoint.core.detector import Detector, Passage
from checkpoint.core.nmea import NmeaParser
from checkpoint.core.pairing import Pairer, Sample
from checkpoint.errors import CommandError

_MAX_PENDING_RESTAMPS = 10_000
_COARSE = (ClockState.NMEA.value, ClockState.UNSYNCED.value)
_STATE_EVERY_NS = 1_000_000_000
# A restamp at least this tight is final; a wider one (the clock has just locked on a
# short fit) stays pending and is restamped again once the bound has halved once more.
_RESTAMP_FINAL_NS = 10_000
# ...but not for ever: a restamped passage deep inside an outage never gets that tight.
_RESTAMP_FOR_NS = 600 * 10**9


def params_for(convention: str, overrides: dict[str, Any] | None = None) -> ClockParams:
    """The clock model's thresholds for a receiver convention, with config overrides.

    Knowing the convention narrows the prior on NMEA latency: "after" sentences
    arrive from the second they name up to the pairer's overrun past the next pulse
    (the tail of a chatty burst at 9600 baud; the bound must hold for it too),
    "before" ones up to 1 s ahead.
    """
    late = 1_000_000_000 + Pairer().overrun_ns
    prior = (
        {"nmea_latency_min_ns": 0, "nmea_latency_max_ns": late}
        if convention == "after"
        else {"nmea_latency_min_ns": -1_000_000_000, "nmea_latency_max_ns": 0}
    )
    return ClockParams(**{**prior, **(overrides or {})})


def format_utc(utc_ns: int) -> str:
    """ISO 8601 UTC with nanoseconds, from integer ns (never via float)."""
    s, ns = divmod(utc_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(s, _dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns:09d}Z"


class Pipeline:
    """One box's timing logic, fed record by record.

    Every method returns the events it produced, each a dict with its `seq`
    already assigned (contiguous from `next_seq`) and sealed into the chain
    (`prev`, `hash`; `head` is the last hash). `new_samples` collects the paired
    clock samples since the caller last drained it, for the store.

    `chain_head` is the `hash` of the store's event `next_seq - 1` (None: start
    from the store's genesis, right for a new store and for replay). An event
    handed out must not be changed afterwards, or its hash no longer matches:
    use `reseal` when a caller has to.
    """

    def __init__(
        self,
        *,
        box: str,
        checkpoint: str,
        store: str,
        inputs: Sequence[InputConfig],
        convention: str = "after",
        next_seq: int = 1,
        clock_params: ClockParams | None = None,
        chain_head: str | None = None,
        tick_uncertainty_ns: int = 0,
    ) -> None:
        self.box, self.checkpoint, self.store = box, checkpoint, store
        # Added to every stamp's bound: how far an edge's tick may be from the edge
        # (0 for kernel timestamps; checkpoint.box.edges.COARSE_TICK_NS for callback ones).
        self.tick_uncertainty_ns = tick_uncertainty_ns
        self.next_seq = next_seq
        if chain_head is not None and not chain.is_hash(chain_head):
            raise ValueError(f"chain_head must be 64 lowercase hex digits, got {chain_head!r}")
        # None when the store has no sealed last event (new store, or events written
        # by software before the chain): a new chain starts from the genesis.
        self.head: str = chain_head if chain_head is not None else chain.genesis(store)
        self.parser = NmeaParser()
        self.pairer = Pairer(convention)
        self.burst = BurstMeter()
        self.clock = ClockModel(clock_params or params_for(convention))
        self.detector = Detector(
            {
                i.name: (i.source, i.min_break_ms * 1_000_000, i.lockout_ms * 1_000_000)
                for i in inputs
            }
        )
        self.now_ns: int | None = None
        self.new_samples: list[Sample] = []
        self.skipped: Counter[str] = Counter()
        self.refused: deque[str] = deque(maxlen=20)
        self.last_passage: dict[str, Any] | None = None
        # (seq, mono_ns, published uncertainty_ns, published clock grade, restamped yet)
        self._unlocked: deque[tuple[int, int, int, str, bool]] = deque()
        self._last_state: ClockState | None = None
        self._state_at = -_STATE_EVERY_NS
        self.transitions: list[tuple[int, str, str]] = []

    # -- records -----------------------------------------------------------
    def feed(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """Feed one capture-format record; unknown types are counted and skipped."""
        kind = rec.get("type")
        if kind == "nmea":  # a dozen a second, the most common record
            return self.nmea(rec["mono_ns"], rec["line"])
        if kind == "pps":
            return self.pps(rec["mono_ns"])
        if kind == "edge":
            return self.edge(rec["input"], rec["mono_ns"], rec["active"], bool(rec.get("fault")))
        if kind == "sysclock":
            return self.sysclock(rec["mono_ns"], rec["realtime_ns"])
        if kind == "correction":
            return self.correction(rec)
        if kind == "advance":
            return self.advance(rec["mono_ns"])
        if kind == "pending":
            # A passage an earlier run of this boot stamped before lock (restart).
            self.pending(rec["ref_seq"], rec["mono_ns"], rec["uncertainty_ns"], rec["clock"])
            return []
        if kind == "sample":
            # Already paired and stored before a restart: straight to the clock.
            self._time(rec["mono_ns"])
            self.clock.add_sample(Sample(rec["mono_ns"], rec["utc_s"]))
            return []
        self.skipped[str(kind)] += 1
        return []

    # Events come out only at GPIO records (edges, PPS), at corrections and from
    # `advance`. GPIO callbacks arrive in tick order, so a GPIO record at tick T
    # means every edge before T has been seen; an NMEA line or a late edge says
    # nothing about edges still in flight, and deciding a break on them could
    # turn a glitch whose release edge is queued behind it into a passage.
    def pps(self, mono_ns: int) -> list[dict[str, Any]]:
        self._time(mono_ns)
        out = self.advance(mono_ns)
        self._samples(self.pairer.pps(mono_ns))
        if self.pairer.anchor_ns == mono_ns:
            self.burst.pulse(mono_ns)
        return out + self._restamps()

    def nmea(self, mono_ns: int, line: str) -> list[dict[str, Any]]:
        self._time(mono_ns)
        self.burst.line(mono_ns, len(line) + 2)  # the line's CR LF crossed the wire too
        fix = self.parser.feed(line, mono_ns)
        if fix is not None:
            self.clock.add_fix(fix)
            self._samples(self.pairer.fix(fix))
        return []

    def edge(
        self, name: str, mono_ns: int, active: bool, fault: bool = False
    ) -> list[dict[str, Any]]:
        self._time(mono_ns)
        out = self._passages(self.detector.edge(name, mono_ns, active, fault))
        return out + self.advance(mono_ns)

    def sysclock(self, mono_ns: int, realtime_ns: int) -> list[dict[str, Any]]:
        self._time(mono_ns)
        self.clock.add_sysclock(mono_ns, realtime_ns)
        return []

    def correction(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """A marshal's correction record; a refused one is counted, never fatal."""
        try:
            if rec["kind"] == "assign":
                return self.assign(rec["ref_seq"], rec["value"], rec.get("by", "marshal"))
            if rec["kind"] == "void":
                return self.void(rec["ref_seq"], rec["value"], rec.get("by", "marshal"))
            raise CommandError(f"unknown correction {rec['kind']!r}")
        except CommandError as e:
            self.skipped["correction_refused"] += 1
            self.refused.append(str(e))
            return []

    def advance(self, now_ns: int) -> list[dict[str, Any]]:
        """Report passages whose break has lasted `min_break` by `now_ns`.

        The daemon calls this from its timer (with `now_ns` held back by the
        edges' delivery delay) so a passage goes out while the car is still in
        the beam. A passage is stamped as of the instant it became certain
        (leading edge + min_break), whenever this happens to be called.
        """
        return self._passages(self.detector.advance(now_ns))

    def flush(self) -> list[dict[str, Any]]:
        """End of input (replay): decide breaks still open, emit pending restamps."""
        out: list[dict[str, Any]] = []
        if self.now_ns is not None:
            out += self._passages(self.detector.advance(self.now_ns + 3_600 * 10**9))
        return out + self._restamps()

    def _time(self, mono_ns: int) -> None:
        """A record arrived: the pipeline's clock (for the clock model) moves on.

        The clock state is looked at once a second of input, not at every NMEA line:
        a transition is logged up to a second late, and a pulse costs less.
        """
        if self.now_ns is None or mono_ns > self.now_ns:
            self.now_ns = mono_ns
        if self.now_ns - self._state_at >= _STATE_EVERY_NS:
            self._state_at = self.now_ns
            self._note_state()

    # -- marshal corrections ---------------------------------------------------
    # The arguments are typed `object`: they come from a command as it was sent, and the
    # compiled core (checkpoint/native.py) would refuse a wrong type with a TypeError
    # before these checks could say what is wrong.
    def assign(self, ref_seq: object, car: object, by: object = "marshal") -> list[dict[str, Any]]:
        """An `assign` event: passage `ref_seq` was car `car`."""
        car = str(car).strip()
        if not (1 <= len(car) <= MAX_CAR) or not car.isprintable():
            raise CommandError(f"car number must be 1-{MAX_CAR} printable characters, got {car!r}")
        seq = self._check_ref(ref_seq)
        return [self._event("assign", ref_seq=seq, car=car, by=by)]

    def void(self, ref_seq: object, reason: object, by: object = "marshal") -> list[dict[str, Any]]:
        """A `void` event: passage `ref_seq` was a false trigger."""
        reason = str(reason).strip()
        if not reason or len(reason) > MAX_REASON:
            raise CommandError(f"void needs a reason of 1-{MAX_REASON} characters")
        seq = self._check_ref(ref_seq)
        return [self._event("void", ref_seq=seq, reason=reason, by=by)]

    def _check_ref(self, ref_seq: object) -> int:
        # bool is an int to Python; `true` from a command must not become seq 1.
        if not is_int(ref_seq):
            raise CommandError(f"seq must be an integer, got {ref_seq!r}")
        if not 1 <= ref_seq < self.next_seq:
            raise CommandError(f"no event with seq {ref_seq} in this store")
        return ref_seq

    # -- internals -------------------------------------------------------------
    def _samples(self, samples: list[Sample]) -> None:
        for s in samples:
            self.clock.add_sample(s)
            self.new_samples.append(s)

    def _note_state(self) -> None:
        if self.now_ns is None:
            return
        state = self.clock.state(self.now_ns)
        if state != self._last_state:
            old = self._last_state.value if self._last_state else "start"
            self.transitions.append((self.now_ns, old, state.value))
            self._last_state = state

    def _stamp(self, mono_ns: int, as_of: int) -> Stamp:
        stamp = self.clock.stamp(mono_ns, max(as_of, mono_ns))
        if self.tick_uncertainty_ns:
            stamp = dataclasses.replace(
                stamp, uncertainty_ns=stamp.uncertainty_ns + self.tick_uncertainty_ns
            )
        return stamp

    def _passages(self, passages: list[Passage]) -> list[dict[str, Any]]:
        out = []
        for p in passages:
            stamp = self._stamp(p.mono_ns, p.mono_ns + self.detector.min_break_ns(p.input))
            ev = self._event(
                "passage",
                input=p.input,
                source=p.source,
                mono_ns=p.mono_ns,
                **_stamp_fields(stamp),
            )
            if stamp.clock != ClockState.LOCKED:
                self.pending(ev["seq"], p.mono_ns, stamp.uncertainty_ns, stamp.clock.value)
            self.last_passage = ev
            out.append(ev)
        return out

    def pending(self, ref_seq: int, mono_ns: int, uncertainty_ns: int, clock: str) -> None:
        """Remember passage `ref_seq`, published at grade `clock`, for a restamp once locked.

        The pipeline calls it for its own passages; the daemon for those an earlier run
        in this OS boot stamped before lock (the store's, via a `pending` record), so a
        restart never strands them at system-clock or NMEA grade.
        """
        if len(self._unlocked) >= _MAX_PENDING_RESTAMPS:
            self._unlocked.popleft()
            self.skipped["restamp_overflow"] += 1
        self._unlocked.append((ref_seq, mono_ns, uncertainty_ns, clock, False))

    def _restamps(self) -> list[dict[str, Any]]:
        """Re-derive passages stamped before lock (or in an outage) once locked.

        A tick before the first pulse, or inside an outage, can only be reached by
        extrapolating or bridging the fit, so its new stamp is labelled holdover;
        what matters to HQ is the bound. A passage published at `nmea` or `unsynced`
        grade is always re-derived (its bound came from priors about the receiver or
        the system clock, the new one from measured pulses); one published at
        `holdover` only once the new bound is at most half the published one, i.e. it
        is worth replacing the time. Right after lock the fit is short and its bound
        tens of µs: the passage stays pending, and gets another restamp when the bound
        has halved again, until one is within `_RESTAMP_FINAL_NS` or the restamped
        passage is `_RESTAMP_FOR_NS` old.
        """
        if not self._unlocked or self.now_ns is None:
            return []
        if self.clock.state(self.now_ns) != ClockState.LOCKED:
            return []
        out: list[dict[str, Any]] = []
        keep: deque[tuple[int, int, int, str, bool]] = deque()
        for ref_seq, mono_ns, published_unc, grade, restamped in self._unlocked:
            stamp = self._stamp(mono_ns, self.now_ns)
            better = stamp.clock in (ClockState.LOCKED, ClockState.HOLDOVER)
            coarse = grade in _COARSE
            if better and (coarse or stamp.uncertainty_ns * 2 <= published_unc):
                out.append(self._event("restamp", ref_seq=ref_seq, **_stamp_fields(stamp)))
                published_unc, grade, restamped = stamp.uncertainty_ns, stamp.clock.value, True
                if published_unc <= _RESTAMP_FINAL_NS:
                    continue
            if not restamped or self.now_ns - mono_ns <= _RESTAMP_FOR_NS:
                keep.append((ref_seq, mono_ns, published_unc, grade, restamped))
        self._unlocked = keep
        return out

    # -- events made outside the timing logic ----------------------------------
    def issue(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """An event of `kind` with the next seq, sealed into the chain.

        For events the daemon makes itself (a seq-floor `skipped` placeholder, an
        event issued again under a new seq): going through here keeps seq and
        chain in step. Envelope and seal keys in `fields` are replaced.
        """
        own = {"schema", "type", "box", "checkpoint", "store", "seq", chain.PREV, chain.HASH}
        return self._event(kind, **{k: v for k, v in fields.items() if k not in own})

    def reseal(self, events: list[dict[str, Any]]) -> None:
        """Seal again, in place, the newest events after the caller changed them.

        `events` must be the last events made (contiguous seqs ending at
        `next_seq - 1`), none of them published yet: their hashes change. The
        first keeps its `prev`; the head moves to the last one's new hash.
        """
        if not events:
            return
        seqs = [ev.get("seq") for ev in events]
        if seqs != list(range(self.next_seq - len(events), self.next_seq)):
            raise ValueError(
                f"reseal needs the newest events in seq order ending at {self.next_seq - 1}, "
                f"got seqs {seqs[:3]}...{seqs[-1:]}"
            )
        prev = events[0][chain.PREV]
        for ev in events:
            ev[chain.PREV] = prev
            ev.pop(chain.HASH, None)
            ev[chain.HASH] = prev = chain.digest(ev)
        self.head = prev

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        ev = {
            "schema": EVENT_SCHEMA,
            "type": kind,
            "box": self.box,
            "checkpoint": self.checkpoint,
            "store": self.store,
            "seq": self.next_seq,
            **fields,
        }
        self.next_seq += 1
        ev = chain.seal(ev, self.head)
        self.head = ev[chain.HASH]
        return ev

    def status(self) -> dict[str, Any]:
        """Clock and detector state for the box's status message."""
        now = self.now_ns or 0
        return {
            "clock": self.clock.state(now).value,
            "clock_detail": self.clock.status(now),
            "nmea": {"accepted": self.parser.accepted, "rejects": dict(self.parser.rejects)},
            "pairing": dict(self.pairer.rejects),
            "inputs": self.detector.stats(),
            "pending_restamps": len(self._unlocked),
            # Passages still at system-clock or NMEA grade: none once locked.
            "coarse_passages": sum(1 for e in self._unlocked if e[3] in _COARSE),
        }


def _stamp_fields(stamp: Stamp) -> dict[str, Any]:
    return {
        "utc_ns": stamp.utc_ns,
        "utc": format_utc(stamp.utc_ns),
        "clock": stamp.clock.value,
        "uncertainty_ns": stamp.uncertainty_ns,
    }
