"""The box's status message (`{prefix}/{box}/status`, retained) and its alarms.

What a marshal, HQ and `doctor` see of a running box: clock state and bound, GPS port
and pairing, beam levels and faults, the outbox's counters, the seq floor's, every
alarm with words saying what to do, and the chain anchor (`chain`: the head of this
store's chain, signed when `[integrity] sign_key` is set) that HQ and `verify` rely on.
The field names are a public contract (README): extend them, never rename them.

Published at once on what must be seen at once (clock state, alarms, sensor faults),
otherwise every `status_interval_s`. Core thread only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint import __version__, native
from checkpoint.box.edges import EdgeSource
from checkpoint.box.gps_serial import SerialReader
from checkpoint.box.keeper import CardKeeper
from checkpoint.box.messages import BadCommands
from checkpoint.box.seqfloor import SeqFloor
from checkpoint.config import Config
from checkpoint.contracts import Topics, message_bytes
from checkpoint.core import chainsig
from checkpoint.core.outbox import Outbox
from checkpoint.core.timing import Pipeline
from checkpoint.errors import ConfigError
from checkpoint.mqtt import Link

log = logging.getLogger("checkpoint.box.daemon")


def signing_key(path: str | None) -> Any:
    """The box's Ed25519 key for signing its chain head, or None when not configured."""
    if not path:
        return None
    try:
        return chainsig.load_signing_key(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"integrity.sign_key {path}: cannot read: {e.strerror}") from None
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"integrity.sign_key {path}: {e}") from None


@dataclass
class StatusParts:
    """The daemon's parts a status is read from (read only, on the core thread)."""

    cfg: Config
    pipeline: Pipeline
    edges: EdgeSource
    serial: SerialReader
    outbox: Outbox
    keeper: CardKeeper
    floor: SeqFloor
    bad: BadCommands
    alarms: dict[str, str]  # the daemon's own alarms; the builder adds the live ones
    signer: Any = None  # Ed25519 private key (cryptography), or None


@dataclass
class StatusBuilder:
    parts: StatusParts
    topics: Topics
    _signed: dict[str, Any] = field(default_factory=dict)
    _last: dict[str, Any] = field(default_factory=dict)
    _next_ns: int = 0
    _gps_mismatch: bool = False  # the pairing mismatch state last logged

    def status(self, now: int | None = None) -> dict[str, Any]:
        now = time.monotonic_ns() if now is None else now
        p = self.parts
        pipe = p.pipeline.status()
        clock = pipe["clock_detail"]
        levels = p.edges.levels()
        faults = p.edges.faults(now)
        pairer = p.pipeline.pairer
        return {
            "state": "ready",
            "box": p.cfg.box,
            "checkpoint": p.cfg.checkpoint,
            "place": p.cfg.place,
            "store": p.keeper.store.store_id,
            "version": __version__,
            # Which build of the timing core runs (checkpoint/native.py): same answers,
            # about 60 % of the CPU when compiled.
            "core": native.state.partition(":")[0],
            "clock": pipe["clock"],
            "uncertainty_ns": clock.get("uncertainty_ns"),
            # Seconds of PPS still needed before the clock can lock (absent once it can).
            "lock_in_s": clock.get("lock_in_s"),
            "fix": p.pipeline.parser.stats(),
            "coarse_passages": pipe["coarse_passages"],
            "ticks": "kernel" if p.edges.kernel_ticks else "callback",
            "gps_port": p.serial.connected,
            "gps_port_waiting": p.serial.waiting,
            "gps_burst": p.pipeline.burst.status(p.cfg.gps.baudrate),
            "pairing": {
                "mismatch": pairer.mismatch,
                "advice": pairer.advice,
                "phase_ns": pairer.phase_ns,
                "tail_ns": pairer.tail_ns,
            },
            "pps_pulses": p.edges.pps_pulses,
            "backlog": p.outbox.backlog,
            "inflight": p.outbox.inflight,
            "last_seq": p.pipeline.next_seq - 1,
            "acked_upto": p.outbox.acked_upto,
            "unstored": len(p.keeper.unstored),
            "skipped_seqs": p.floor.skipped_seqs,
            "reissued": p.floor.reissued,
            "inputs": {
                name: {"broken": levels.get(name), "fault": name in faults, **stats}
                for name, stats in pipe["inputs"].items()
            },
            "alarms": self.alarms_now(faults),
            "bad_commands": p.bad.count,
            **self.chain_anchor(),
        }

    def offline(self) -> dict[str, Any]:
        """The box's last word: HQ keeps this anchor after the box is gone, so an event
        deleted from HQ later still contradicts it."""
        p = self.parts
        return {
            "state": "offline",
            "box": p.cfg.box,
            "store": p.keeper.store.store_id,
            "last_seq": p.pipeline.next_seq - 1,
            "backlog": p.outbox.backlog,
            "acked_upto": p.outbox.acked_upto,
            **self.chain_anchor(),
        }

    def alarms_now(self, faults: dict[str, int]) -> dict[str, str]:
        p = self.parts
        alarms = dict(p.alarms)
        for name, dropped in faults.items():
            alarms[f"input:{name}"] = f"sensor fault: {name} chattering ({dropped} edges dropped)"
        port_error = p.serial.last_error
        if not p.serial.connected and port_error:
            # Retried every second: the box goes on timing (system clock) meanwhile.
            alarms["gps_port"] = port_error
        pairer = p.pipeline.pairer
        if pairer.mismatch:
            alarms["gps"] = f"NMEA/PPS convention mismatch: {pairer.advice}"
        raw = p.keeper.raw_alarm()
        if raw:
            alarms["raw"] = raw
        return alarms

    def chain_anchor(self) -> dict[str, Any]:
        """`{"chain": {"seq", "head"[, "sig"]}}`: the head of this store's chain, signed
        with `[integrity] sign_key`; empty before the first event. HQ keeps every one."""
        p = self.parts
        seq = p.pipeline.next_seq - 1
        if seq < 1:
            return {}
        head = p.pipeline.head
        if p.signer is None:
            return {"chain": {"seq": seq, "head": head}}
        if self._signed.get("seq") != seq or self._signed.get("head") != head:
            box, store = p.cfg.box, p.keeper.store.store_id
            self._signed = chainsig.sign_head(p.signer, box, store, seq, head)
        return {"chain": self._signed}

    def reconnected(self) -> None:
        self._last = {}  # the broker may have lost the retained status: publish again

    def turn(self, link: Link, now: int) -> None:
        """Log clock and pairing changes; publish the status when due (module docstring)."""
        p = self.parts
        for t_ns, old, new in p.pipeline.transitions:
            log.warning("clock %s -> %s at tick %d", old, new, t_ns)
        p.pipeline.transitions.clear()
        pairer = p.pipeline.pairer
        if pairer.mismatch != self._gps_mismatch:
            self._gps_mismatch = pairer.mismatch
            if pairer.mismatch:
                log.error("GPS time refused: %s", pairer.advice)
            else:
                log.warning("GPS time sentences agree with the pulses again: pairing resumes")
        if not link.connected:
            return
        # Counters and beam levels ride along with the periodic message (every passage
        # toggles a level twice: publishing on that costs a retained status per edge).
        # The key is made every turn, the whole status (clock fit, counters) only to
        # publish.
        faults = p.edges.faults(now)
        key = {
            "clock": p.pipeline.clock.state(p.pipeline.now_ns or 0).value,
            "alarms": self.alarms_now(faults),
            "faults": {i.name: i.name in faults for i in p.cfg.inputs},
        }
        if key != self._last or now >= self._next_ns:
            st = self.status(now)
            link.publish(self.topics.status, message_bytes(st), qos=1, retain=True)
            self._last = key
            self._next_ns = now + p.cfg.status_interval_s * 10**9
