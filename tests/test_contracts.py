"""checkpoint.contracts against the README's topic table and the box's own store.

The README is the contract a third party builds against: every topic it lists is the
one `Topics` builds, and the bytes a box stores for an event are the bytes it sends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from checkpoint import EVENT_SCHEMA, contracts
from checkpoint.box.store import Store

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_topic_in_the_readme_table_is_built_by_contracts():
    table = re.findall(r"^\| `\{prefix\}/\{box\}/(\w+)` \|", README.read_text(), re.M)
    assert sorted(table) == sorted(["event", "status", "ack", "cmd", "hwm", "hqfix"])
    t = contracts.Topics("rally/2026", "box07")
    for kind in table:
        assert getattr(t, kind) == f"rally/2026/box07/{kind}"
    assert {topic for topic, _ in t.box_subscriptions()} == {t.ack, t.cmd, t.hwm, t.hqfix}
    assert contracts.hq_subscriptions("rally") == [("rally/+/event", 1), ("rally/+/status", 1)]
    assert contracts.split_topic("rally", t.of("event").replace("rally/2026", "rally")) == (
        "box07",
        "event",
    )
    assert contracts.split_topic("rally", "rally/a/b/event") is None


def test_the_bytes_stored_are_the_bytes_published(tmp_path):
    store = Store(tmp_path / "box.db", box="box07", checkpoint="PC3")
    ev = {"schema": EVENT_SCHEMA, "type": "passage", "box": "box07", "store": store.store_id,
          "seq": 1, "mono_ns": 5, "utc": "2026-12-03T06:00:00.00Z", "note": "Ünïcode"}  # fmt: skip
    store.record(boot="b", edges=[], pps=[], samples=[], events=[ev])
    ((seq, text),) = store.event_payloads(1, 1)
    assert text.encode() == contracts.event_bytes(ev) and json.loads(text) == ev
    assert "\\u00dc" in text  # ASCII only, as every JSON parser reads it
    store.close()
    with pytest.raises(ValueError):
        contracts.event_bytes({**ev, "uncertainty_ns": float("nan")})  # not JSON


def test_is_int_refuses_bools_and_the_limits_are_the_documented_ones():
    assert contracts.is_int(3) and not contracts.is_int(True) and not contracts.is_int(3.0)
    assert contracts.MAX_SEQ == 2**53 and contracts.MAX_CAR == 16
    with pytest.raises(contracts.Rejected) as e:
        contracts.parse_event("box07", b'{"schema": "checkpoint/event/1", "seq": NaN}')
    assert e.value.reason == "bad_json"
