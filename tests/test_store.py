"""Store tests on real SQLite files: schema, atomic batches, errors, corruption, crashes."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from waits import wait_for

from checkpoint.box.store import Store, StoreCorruptError
from checkpoint.errors import StoreError

BOOT = "1b7c0a52-5d0e-4a51-9a36-2f0c1e6a1d44"


def ev(seq: int, kind: str = "passage", **fields) -> dict:
    return {"seq": seq, "type": kind, **fields}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "box.db", box="box7", checkpoint="TC3")
    yield s
    s.close()


def raw(path: Path, sql: str, params=()) -> list[tuple]:
    """Look at the file with a separate plain connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def make_store_with_events(path: Path, n: int = 2000) -> str:
    with Store(path, box="b", checkpoint="c") as s:
        for lo in range(1, n + 1, 100):
            s.record(boot=BOOT, events=[ev(q, pad="y" * 300) for q in range(lo, lo + 100)])
        return s.store_id


# -- identity, settings, schema ----------------------------------------------------------


def test_new_store_has_identity_settings_and_is_empty(store):
    assert len(store.store_id) == 32 and int(store.store_id, 16) >= 0
    assert store.pragmas() == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000}
    assert store.last_seq() == 0
    assert store.acked_upto() == 0
    assert store.counts() == {"edges": 0, "pps": 0, "samples": 0, "events": 0}
    assert store.passages() == []
    assert (store.stored_box, store.stored_checkpoint) == ("box7", "TC3")
    assert store.moved_warning is None
    assert store.created.endswith("Z")


def test_store_id_belongs_to_the_file(tmp_path):
    with Store(tmp_path / "a.db", box="b", checkpoint="c") as a:
        first = a.store_id
    with Store(tmp_path / "a.db", box="b", checkpoint="c") as again:
        assert again.store_id == first
    with Store(tmp_path / "other.db", box="b", checkpoint="c") as other:
        assert other.store_id != first


def test_moved_box_keeps_store_and_warns(tmp_path):
    with Store(tmp_path / "a.db", box="box1", checkpoint="TC1") as a:
        a.record(boot=BOOT, events=[ev(1)])
        sid = a.store_id
    with Store(tmp_path / "a.db", box="box2", checkpoint="TC4") as moved:
        assert moved.store_id == sid
        assert moved.last_seq() == 1
        assert (moved.stored_box, moved.stored_checkpoint) == ("box1", "TC1")
        assert (moved.box, moved.checkpoint) == ("box2", "TC4")
        assert "box1" in moved.moved_warning and "box2" in moved.moved_warning
    # The file still names its creator: nothing was overwritten.
    assert dict(raw(tmp_path / "a.db", "SELECT key, value FROM meta"))["box"] == "box1"


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "a.db"
    Store(path, box="b", checkpoint="c").close()
    Store(path, box="b", checkpoint="c").close()
    rows = raw(path, "SELECT migration_set, name FROM _sqlite_migrations")
    assert rows == [("checkpoint-store", "m001_initial")]


def test_file_from_a_newer_checkpoint_is_refused(tmp_path):
    path = tmp_path / "a.db"
    Store(path, box="b", checkpoint="c").close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('checkpoint-store', 'm999_future', 'x')"
        )
    conn.close()
    with pytest.raises(StoreError, match="newer checkpoint"):
        Store(path, box="b", checkpoint="c")


def test_foreign_database_is_left_alone(tmp_path):
    path = tmp_path / "music.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="not a checkpoint store"):
        Store(path, box="b", checkpoint="c")
    assert [r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")] == [
        "songs"
    ]


def test_times_are_stored_as_integers(store):
    big = 2**62 + 1  # would lose bits as a float
    store.record(
        boot=BOOT,
        edges=[("beam_a", big, True)],
        pps=[big],
        samples=[(big, 1_750_000_000)],
        events=[ev(1, mono_ns=big)],
    )
    for table, column in (
        ("edges", "mono_ns"),
        ("pps", "mono_ns"),
        ("samples", "mono_ns"),
        ("samples", "utc_s"),
        ("events", "mono_ns"),
    ):
        assert raw(store.path, f"SELECT typeof({column}), {column} FROM {table}")[0][0] == (
            "integer"
        )
    assert raw(store.path, "SELECT mono_ns, active, boot FROM edges") == [(big, 1, BOOT)]


def test_boot_id_reads_the_kernel_file_or_falls_back(tmp_path):
    f = tmp_path / "boot_id"
    f.write_text("1b7c0a52-5d0e-4a51-9a36-2f0c1e6a1d44\n")
    assert Store.boot_id(f) == "1b7c0a52-5d0e-4a51-9a36-2f0c1e6a1d44"
    a, b = Store.boot_id(tmp_path / "missing"), Store.boot_id(tmp_path / "missing")
    assert a.startswith("proc-") and a != b
    if Path("/proc/sys/kernel/random/boot_id").exists():
        assert Store.boot_id() == Store.boot_id()


# -- record ------------------------------------------------------------------------------


def test_record_stores_every_kind_and_exact_payload(store):
    events = [
        ev(1, mono_ns=5, car=None, name="Zoë", when={"b": 1, "a": 2}),
        ev(2, "assign", ref_seq=1, car=42),
    ]
    store.record(
        boot=BOOT,
        edges=[("beam_a", 10, True), ("beam_a", 20, False)],
        pps=[7, 1_000_000_007],
        samples=[(7, 1_750_000_000)],
        events=events,
    )
    assert store.last_seq() == 2
    assert store.counts() == {"edges": 2, "pps": 2, "samples": 1, "events": 2}
    payloads = store.event_payloads(1, 10)
    assert payloads == [(e["seq"], json.dumps(e, separators=(",", ":"))) for e in events]
    # Key order is the producer's, nothing re-sorted, no spaces, ASCII only.
    assert payloads[0][1].startswith('{"seq":1,"type":"passage","mono_ns":5,"car":null,')
    assert '"when":{"b":1,"a":2}' in payloads[0][1]
    assert "\\u00eb" in payloads[0][1]
    assert raw(store.path, "SELECT seq, type, ref_seq, mono_ns, boot FROM events") == [
        (1, "passage", None, 5, BOOT),
        (2, "assign", 1, None, BOOT),
    ]


def test_event_payloads_range_and_limit(store):
    store.record(boot=BOOT, events=[ev(q) for q in range(1, 11)])
    assert [s for s, _ in store.event_payloads(3, 6)] == [3, 4, 5, 6]
    assert [s for s, _ in store.event_payloads(1, 10, limit=3)] == [1, 2, 3]
    assert store.event_payloads(11, 20) == []


def test_seq_gap_is_refused_and_nothing_is_written(store):
    store.record(boot=BOOT, events=[ev(1)])
    with pytest.raises(StoreError, match="does not follow"):
        store.record(boot=BOOT, edges=[("a", 1, True)], pps=[1], events=[ev(3)])
    with pytest.raises(StoreError, match="contiguous"):
        store.record(boot=BOOT, edges=[("a", 1, True)], events=[ev(2), ev(4)])
    assert store.last_seq() == 1
    assert store.counts() == {"edges": 0, "pps": 0, "samples": 0, "events": 1}


def test_first_seq_must_be_one(store):
    with pytest.raises(StoreError, match="does not follow"):
        store.record(boot=BOOT, events=[ev(2)])


def test_resubmitting_a_committed_batch_is_a_no_op(store):
    batch = [ev(1, car=1), ev(2, car=2)]
    store.record(boot=BOOT, edges=[("a", 1, True)], events=batch)
    # The caller saw an error after the commit succeeded and retries the same batch.
    store.record(boot=BOOT, edges=[("a", 1, True)], events=batch)
    assert store.counts() == {"edges": 1, "pps": 0, "samples": 0, "events": 2}
    # Same seqs with other content is a real conflict.
    with pytest.raises(StoreError, match="does not follow"):
        store.record(boot=BOOT, events=[ev(1, car=1), ev(2, car=99)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"edges": [("a", 1.5, True)]},
        {"edges": [("a", 1, 1)]},
        {"pps": [True]},
        {"samples": [(1, 1.0)]},
        {"events": [{"type": "passage"}]},
        {"events": [{"seq": True, "type": "passage"}]},
        {"events": [{"seq": 1}]},
        {"events": [{"seq": 1, "type": "passage", "mono_ns": 1.0}]},
        {"events": [{"seq": 1, "type": "passage", "x": float("nan")}]},
        {"events": [{"seq": 1, "type": "passage", "x": object()}]},
    ],
)
def test_malformed_input_is_a_bug_and_writes_nothing(store, kwargs):
    with pytest.raises((ValueError, TypeError)):
        store.record(boot=BOOT, pps=[1], **kwargs)
    assert store.counts()["pps"] == 0


def test_acked_upto_is_monotone_and_clamped(store):
    store.record(boot=BOOT, events=[ev(q) for q in range(1, 6)])
    store.set_acked(3)
    store.set_acked(2)
    assert store.acked_upto() == 3
    store.set_acked(99)
    assert store.acked_upto() == 5
    store.close()
    with Store(store.path, box="box7", checkpoint="TC3") as again:
        assert again.acked_upto() == 5


def test_an_ack_rides_in_a_batch_with_the_same_rules(store):
    # The daemon folds HQ's acks into its next batch instead of a commit per ack.
    store.record(boot=BOOT, events=[ev(q) for q in range(1, 4)], acked=2)
    assert store.acked_upto() == 2
    store.record(boot=BOOT, pps=[7], acked=1)
    assert store.acked_upto() == 2
    store.record(boot=BOOT, events=[ev(4)], acked=99)
    assert store.acked_upto() == 4
    with pytest.raises(ValueError):
        store.record(boot=BOOT, pps=[8], acked="4")
    assert store.counts()["pps"] == 1


def test_passages_apply_corrections(store):
    env = {"schema": "checkpoint/event/1", "box": "box7", "checkpoint": "TC3", "store": "s"}
    store.record(
        boot=BOOT,
        events=[
            ev(1, **env, mono_ns=100, utc_ns=1000, clock="locked"),
            ev(2, **env, mono_ns=200, utc_ns=2000, clock="holdover"),
            ev(3, "assign", **env, ref_seq=1, car="17", by="marshal"),
            ev(4, **env, mono_ns=300, utc_ns=3000, clock="locked"),
            ev(5, "restamp", **env, ref_seq=2, utc_ns=2001, clock="locked"),
            ev(6, "void", **env, ref_seq=4, reason="marshal walked through", by="hq"),
            ev(7, "assign", **env, ref_seq=1, car="18", by="hq"),
            ev(8, "assign", **env, ref_seq=999, car="1"),  # names nothing stored: ignored
        ],
    )
    got = store.passages()
    assert [p["seq"] for p in got] == [1, 2, 4]
    assert got[0] == {
        "seq": 1,
        "type": "passage",
        **env,
        "mono_ns": 100,
        "utc_ns": 1000,
        "clock": "locked",
        "car": "18",
        "assign_by": "hq",
        "void": False,
        "corrections": [3, 7],
    }
    assert got[1]["utc_ns"] == 2001 and got[1]["clock"] == "locked"
    assert got[1]["corrections"] == [5] and got[1]["type"] == "passage"
    assert got[2]["void"] is True and got[2]["void_reason"] == "marshal walked through"
    assert got[2]["void_by"] == "hq" and got[2]["utc_ns"] == 3000
    newest = store.passages(limit=2)
    assert [p["seq"] for p in newest] == [2, 4]
    assert newest[0]["utc_ns"] == 2001
    assert store.passages(limit=0) == []


# -- errors ------------------------------------------------------------------------------


def test_disk_full_is_all_or_nothing_and_retryable(store):
    store.record(boot=BOOT, events=[ev(1)])
    pages = raw(store.path, "PRAGMA page_count")[0][0]
    # SQLITE_FULL, as from a full SD card: the file may not grow past its current size.
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    batch = dict(
        boot=BOOT,
        edges=[("a", q, True) for q in range(50)],
        pps=list(range(50)),
        events=[ev(q, pad="z" * 2000) for q in range(2, 40)],
    )
    with pytest.raises(StoreError, match="disk full: free space on the filesystem holding"):
        store.record(**batch)
    assert store.last_seq() == 1
    assert store.counts() == {"edges": 0, "pps": 0, "samples": 0, "events": 1}
    with pytest.raises(StoreError, match="disk full"):
        store.record(**batch)  # still full: still nothing
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.record(**batch)
    assert store.last_seq() == 39
    assert store.counts() == {"edges": 50, "pps": 50, "samples": 0, "events": 39}
    assert [s for s, _ in store.event_payloads(1, 100, limit=1000)] == list(range(1, 40))


def test_read_only_connection_reports_and_recovers(store):
    # Tests run as root, where chmod does not stop writes; query_only makes SQLite refuse
    # them with the same SQLITE_READONLY a read-only remounted card gives.
    store._db.execute("PRAGMA query_only = 1")
    with pytest.raises(StoreError, match="database is read-only"):
        store.record(boot=BOOT, pps=[1], events=[ev(1)])
    with pytest.raises(StoreError, match="database is read-only"):
        store.set_acked(5)
    store._db.execute("PRAGMA query_only = 0")
    store.record(boot=BOOT, pps=[1], events=[ev(1)])
    assert store.counts()["pps"] == 1


def test_readonly_open_reads_but_never_writes(tmp_path):
    path = tmp_path / "a.db"
    with Store(path, box="b", checkpoint="c") as s:
        s.record(boot=BOOT, events=[ev(1), ev(2)])
        sid = s.store_id
    with Store(path, box="b", checkpoint="c", readonly=True) as ro:
        assert ro.store_id == sid
        assert ro.last_seq() == 2 and [p["seq"] for p in ro.passages()] == [1, 2]
        with pytest.raises(StoreError, match="read-only"):
            ro.record(boot=BOOT, events=[ev(3)])
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "typo.db", box="b", checkpoint="c", readonly=True)
    assert not (tmp_path / "typo.db").exists()


def test_readonly_reader_alongside_the_writer(tmp_path):
    path = tmp_path / "a.db"
    with Store(path, box="b", checkpoint="c") as writer:
        writer.record(boot=BOOT, events=[ev(1)])
        with Store(path, box="b", checkpoint="c", readonly=True) as reader:
            writer.record(boot=BOOT, events=[ev(2)])
            assert reader.last_seq() == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_permissions(tmp_path):
    path = tmp_path / "a.db"
    Store(path, box="b", checkpoint="c").close()
    path.chmod(0o444)
    try:
        with pytest.raises(StoreError, match="read-only|cannot open"):
            with Store(path, box="b", checkpoint="c") as s:
                s.record(boot=BOOT, events=[ev(1)])
    finally:
        path.chmod(0o644)


def test_settings_that_do_not_apply_are_refused():
    # ":memory:" is a real SQLite database that cannot do WAL: journal_mode reads back
    # "memory", as it would read back "delete" on a filesystem without shared memory.
    with pytest.raises(StoreError, match="settings did not apply.*journal_mode is 'memory'"):
        Store(":memory:", box="b", checkpoint="c")


def test_missing_directory_cannot_open(tmp_path):
    with pytest.raises(StoreError, match="cannot open database"):
        Store(tmp_path / "nope" / "a.db", box="b", checkpoint="c")


def test_use_from_another_thread_or_after_close_is_refused(store):
    errors = []

    def other():
        try:
            store.last_seq()
        except StoreError as err:
            errors.append(err)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "thread" in str(errors[0])
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.last_seq()


# -- corruption --------------------------------------------------------------------------


def test_healthy_or_missing_file_is_not_replaced(tmp_path):
    path = tmp_path / "a.db"
    fresh, moved = Store.open_or_replace(path, box="b", checkpoint="c")
    assert moved is None
    fresh.record(boot=BOOT, events=[ev(1)])
    sid = fresh.store_id
    fresh.close()
    again, moved = Store.open_or_replace(path, box="b", checkpoint="c")
    assert moved is None and again.store_id == sid and again.last_seq() == 1
    again.close()


def test_junk_file_is_moved_aside_with_its_side_files(tmp_path):
    path = tmp_path / "box.db"
    junk = os.urandom(20_000)
    path.write_bytes(junk)
    with pytest.raises(StoreCorruptError, match="database is corrupt"):
        Store(path, box="b", checkpoint="c")
    # As left by a crash: side files a salvage attempt may want.
    Path(f"{path}-wal").write_bytes(b"wal junk")
    Path(f"{path}-shm").write_bytes(b"shm junk")
    store, moved = Store.open_or_replace(path, box="b", checkpoint="c")
    try:
        assert moved is not None and moved.parent == tmp_path
        assert moved.name.startswith("box.db.corrupt-") and moved.name.endswith("Z")
        assert moved.read_bytes() == junk
        assert Path(f"{moved}-wal").read_bytes() == b"wal junk"
        assert Path(f"{moved}-shm").read_bytes() == b"shm junk"
        assert store.last_seq() == 0 and store.pragmas()["journal_mode"] == "wal"
        store.record(boot=BOOT, events=[ev(1)])
    finally:
        store.close()


@pytest.mark.parametrize("keep", ["100 bytes", "one page", "half"])
def test_truncated_database_is_moved_aside(tmp_path, keep):
    path = tmp_path / "box.db"
    old_id = make_store_with_events(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate({"100 bytes": 100, "one page": 4096, "half": size // 2}[keep])
    store, moved = Store.open_or_replace(path, box="b", checkpoint="c")
    try:
        assert moved is not None and moved.exists()
        assert store.store_id != old_id
        assert store.last_seq() == 0
    finally:
        store.close()


def test_damaged_page_fails_quick_check_and_is_moved_aside(tmp_path):
    path = tmp_path / "box.db"
    old_id = make_store_with_events(path)
    with open(path, "r+b") as f:
        f.seek(4096 * 50)
        f.write(os.urandom(4096))
    # The header is intact, so it opens; only the check finds the damage.
    with Store(path, box="b", checkpoint="c") as damaged:
        with pytest.raises(StoreCorruptError, match="corrupt"):
            damaged.check()
    store, moved = Store.open_or_replace(path, box="b", checkpoint="c")
    try:
        assert moved is not None and store.store_id != old_id and store.last_seq() == 0
    finally:
        store.close()


def test_two_replacements_in_one_second_do_not_collide(tmp_path):
    path = tmp_path / "box.db"
    moved = []
    for _ in range(2):
        path.write_bytes(b"not a database" * 100)
        s, m = Store.open_or_replace(path, box="b", checkpoint="c")
        s.close()
        path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        moved.append(m)
    assert moved[0] != moved[1] and all(m.exists() for m in moved)


# -- crash durability --------------------------------------------------------------------

CHILD = r"""
import random, sys
from checkpoint.box.store import Store
store = Store(sys.argv[1], box="b", checkpoint="c")
seq = store.last_seq()
rng = random.Random(int(sys.argv[2]))
while True:
    n = rng.randint(1, 5)
    events = [{"seq": seq + i, "type": "passage", "pad": "p" * rng.randint(0, 3000)}
              for i in range(1, n + 1)]
    # One edge per event, so a half-written batch would show as a count mismatch.
    store.record(boot="boot", edges=[("a", seq + i, True) for i in range(1, n + 1)],
                 events=events)
    seq += n
    print(f"committed {seq}", flush=True)
"""


def test_sigkill_never_loses_a_reported_commit(tmp_path):
    path = tmp_path / "box.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(1234)
    reported = 0
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(child.stdout,))
        reader.start()
        wait_for(lambda got=lines: got, 10, "the child's first commit", every=0.005)
        # Kill at a random moment, usually in the middle of some transaction: the fault's
        # schedule, not a wait for anything.
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.wait()
        reader.join()
        reported = max(reported, *(int(line.split()[1]) for line in lines))
        with Store(path, box="b", checkpoint="c") as s:
            last = s.last_seq()
            assert last >= reported
            counts = s.counts()
            # Contiguous from 1 (seq is the primary key, all >= 1) and whole batches only.
            assert counts["events"] == last == counts["edges"]
            assert raw(path, "SELECT MIN(seq) FROM events")[0][0] == 1
            s.check()
        reported = last


def test_close_leaves_a_file_other_tools_can_copy(tmp_path):
    path = tmp_path / "a.db"
    with Store(path, box="b", checkpoint="c") as s:
        s.record(boot=BOOT, events=[ev(1)])
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    assert raw(copy, "SELECT seq FROM events") == [(1,)]
