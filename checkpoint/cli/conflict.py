"""`checkpoint hq conflict`: list the seqs with two versions, and decide which counts.

A conflict is a seq of a box's store that arrived twice with different content: a
forgery published with a stolen credential and the box's own event (either may have
come first). HQ keeps both and counts neither in the results until an official
decides here; the decision is an audited `keep` correction (who, why, which version).
"""

from __future__ import annotations

import argparse
import json

from checkpoint.errors import CommandError
from checkpoint.hq import integrity
from checkpoint.hq.store import HQStore


def cmd_conflict(args: argparse.Namespace) -> int:
    """List conflicts (two versions of one seq), or decide one: BOX SEQ --keep ID."""
    with HQStore(args.db, create=False) as store:
        if args.box is None:
            return _list(store, args.json)
        if args.seq is None or not args.keep:
            raise CommandError("to decide, give BOX SEQ --keep ID --by NAME --reason TEXT")
        # No surrounding transaction: the correction takes the write lock itself (a read
        # snapshot could not be upgraded while the collector commits).
        done = integrity.decide(
            store,
            args.box,
            args.seq,
            args.keep,
            by=args.by or "",
            reason=args.reason or "",
            store=args.store,
        )
        print(
            f"box {done['box']} seq {done['seq']}: version {done['kept'][:16]} counts from now "
            f"on (correction {done['id']})"
        )
        return 0


def _list(store: HQStore, as_json: bool) -> int:
    rows = integrity.conflict_rows(store.db)
    if as_json:
        for r in rows:
            for v in r["versions"]:
                v.pop("payload")
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("(no conflicts)")
    for r in rows:
        state = f"decided: {r['kept'][:16]} counts" if r["kept"] else "UNDECIDED: neither counts"
        print(f"box {r['box']} store {r['store'][:8]} seq {r['seq']}: {state}")
        for v in r["versions"]:
            evidence = [
                w
                for w, yes in (
                    ("the box's status named it", v["anchored"]),
                    ("the next seq follows it", v["chained"]),
                    (f"quarantined: {v['quarantine']}", v["quarantine"]),
                )
                if yes
            ]
            print(
                f"  {v['id'][:16]}  {v['arrived']:5} at {v['at']}  {v['type']} {v['utc'] or ''}"
                + (f"  ({'; '.join(evidence)})" if evidence else "")
            )
    return 0


def add_conflict_command(sub: argparse._SubParsersAction) -> None:
    """Register `hq conflict`."""
    r = sub.add_parser("conflict", help=cmd_conflict.__doc__)
    r.add_argument("--db", required=True, metavar="PATH", help="HQ database file (SQLite)")
    r.add_argument("box", nargs="?")
    r.add_argument("seq", nargs="?", type=int)
    r.add_argument("--keep", metavar="ID", help="hash (8+ hex digits) of the version that counts")
    r.add_argument("--by", metavar="NAME", help="who decides")
    r.add_argument("--reason", help="why (the box's card, the signed head, ...)")
    r.add_argument("--store", metavar="S", help="store id (prefix) when SEQ is ambiguous")
    r.add_argument("--json", action="store_true", help="list as JSON")
    r.set_defaults(func=cmd_conflict)
