"""Automatic identification: which car made each timed passage.

A beam knows when, not who; a regularity crew tries to be at every control at its
ideal time. So HQ predicts each car's time at each control and assigns passages to
cars by a global one-to-one matching per control, in route order:

* Prediction: the car's latest timed passage at an earlier control (automatic or
  human) plus the scheduled time between the two controls (`Control.due_ns`, which
  the trials' targets define); with no such anchor, its start plus the due offset.
  The prediction's sigma grows as the square root of the sum of the legs' variances
  (`identify.sigma_s` on a regularity leg, `transfer_sigma_s` outside a trial, or
  the control's own `sigma_s`).
* At a time control a car on time arrives anywhere in its own unit (the minute):
  the prediction is that window, from its start plus the due offset, and the
  deviation counts from the window's edges (sigma: the control's, else `sigma_s`).
* Gate: a car further than `gate_sigmas` sigmas from a passage cannot be it.
* Matching: the cost of car c for passage p is z^2/2 + ln(sigma_c / sigma_s)
  (negative log-likelihood against a one-leg sigma, z the deviation in sigmas);
  leaving a passage without a car (an extra vehicle) or a car without a passage
  (skipped, retired, late) costs a fixed `gate_sigmas^2 / 4` each. The minimum-cost
  one-to-one assignment
  (`checkpoint.hq.assign`) over each connected group of passages and cars is the
  answer; cars that overtook each other are matched crossed when that is cheaper.
* Confidence: for each pair, the same problem is solved again with that pair
  forbidden; the increase in cost is the pair's margin (log-likelihood lead). Under
  `min_margin` the passage is "to confirm": it keeps the suggestion but no car,
  and it anchors nothing. A passage the optimum leaves as nobody although a car was
  in its gate is solved again forced to be a car: if that costs less than
  `min_margin` more, it is "to confirm" too (two passages for one car).
* A marshal's or HQ's assignment always wins: those passages and cars leave the
  matching, and anchor the car's next prediction.
* A car marked retired drops out of the matching after the first control it missed.

Pure: timed passages (`checkpoint.hq.dualtiming`), the event and the cars' starts in;
an `Identification` out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from checkpoint.hq import assign
from checkpoint.hq.dualtiming import Key, Timed
from checkpoint.hq.event import Event, Identify

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Call:
    """The verdict on one timed passage.

    `status`: "auto" (identified, confident), "confirm" (a likely car, `suggest`, not
    confident enough), "unknown" (no car is plausible: an extra vehicle, or a car off
    its schedule), "marshal" / "hq" (assigned by a person).
    """

    timed: Timed
    status: str
    car: str | None
    suggest: str | None = None
    predicted_ns: int | None = None
    margin: float | None = None
    z: float | None = None

    @property
    def source(self) -> str | None:
        """Where the car number comes from: auto, marshal or hq (None without a car)."""
        if self.car is None:
            return None
        return "auto" if self.status == "auto" else self.status


@dataclass
class Identification:
    """Every timed passage's call, per control in route order, and per raw passage."""

    calls: dict[str, list[Call]] = field(default_factory=dict)
    by_key: dict[Key, Call] = field(default_factory=dict)
    expected: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def car_passages(self) -> dict[str, dict[str, Call]]:
        """car → control → its (first) call with that car."""
        out: dict[str, dict[str, Call]] = {}
        for ctl, calls in self.calls.items():
            for c in calls:
                if c.car is not None:
                    out.setdefault(c.car, {}).setdefault(ctl, c)
        return out

    def to_confirm(self) -> list[Call]:
        """Passages a person must look at, in time order."""
        out = [c for calls in self.calls.values() for c in calls if c.status == "confirm"]
        return sorted(out, key=lambda c: c.timed.utc_ns)

    def counts(self) -> dict[str, int]:
        """Timed passages by status."""
        out: dict[str, int] = {}
        for calls in self.calls.values():
            for c in calls:
                out[c.status] = out.get(c.status, 0) + 1
        return out


def _components(
    n_p: int, n_c: int, edges: Mapping[tuple[int, int], float]
) -> list[tuple[list[int], list[int]]]:
    parent = list(range(n_p + n_c))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p, c in edges:
        a, b = find(p), find(n_p + c)
        if a != b:
            parent[a] = b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for p in range(n_p):
        groups.setdefault(find(p), ([], []))[0].append(p)
    for c in range(n_c):
        groups.setdefault(find(n_p + c), ([], []))[1].append(c)
    return [g for g in groups.values() if g[0] and g[1]]


def _solve_block(
    ps: list[int], cs: list[int], edges: Mapping[tuple[int, int], float], unmatched: float,
    must: int | None = None,
) -> tuple[dict[int, int], float, list[list[float]]]:  # fmt: skip
    """Min-cost matching of one block; returns passage → car, total, the matrix.

    `must`: a passage that may not be left without a car.
    """
    n, m = len(ps), len(cs)
    big = assign.FORBIDDEN
    size = n + m
    mat = [[big] * size for _ in range(size)]
    for i, p in enumerate(ps):
        for j, c in enumerate(cs):
            if (p, c) in edges:
                mat[i][j] = edges[(p, c)]
        mat[i][m + i] = big if p == must else unmatched  # the passage is nobody
    for j in range(m):
        mat[n + j][j] = unmatched  # the car is not here
        for i in range(n):
            mat[n + j][m + i] = 0.0
    cols = assign.solve(mat)
    pairs = {ps[i]: cs[cols[i]] for i in range(n) if cols[i] < m and mat[i][cols[i]] < big}
    return pairs, assign.total(mat, cols), mat


def _margin(
    ps: list[int], cs: list[int], edges: Mapping[tuple[int, int], float], unmatched: float,
    p: int, c: int, best: float,
) -> float:  # fmt: skip
    """How much worse the block's best assignment gets when p may not be c."""
    rivals = [k for k in edges if (k[0] == p) != (k[1] == c) and (k[0] in ps)]
    if not rivals:
        # Only the "nobody" options compete: closed form.
        return 2 * unmatched - edges[(p, c)]
    reduced = {k: v for k, v in edges.items() if k != (p, c)}
    _, alt, _ = _solve_block(ps, cs, reduced, unmatched)
    return alt - best


def _cumulative_variance(event: Event) -> list[int]:
    """Per control, the variance (ns²) of a car's time accumulated from the first control:
    each leg its own sigma, else the trial's or the transfer's."""
    idp, ctls = event.identify, event.controls
    cum_var = [0] * len(ctls)
    for k in range(1, len(ctls)):
        s = ctls[k].sigma_ns
        if s is None:
            in_trial = event.trial_of_leg(ctls[k - 1].id, ctls[k].id) is not None
            s = idp.sigma_ns if in_trial else idp.transfer_sigma_ns
        cum_var[k] = cum_var[k - 1] + s * s
    return cum_var


Edges = dict[tuple[int, int], float]  # (passage, car) → cost (or z)


def _edges(
    times: list[int], preds: list[tuple[int, float]], width: int, gate: float, base: float
) -> tuple[Edges, Edges]:
    """Costs (and z-scores) of every (passage, car) pair inside the gate.

    Passages and predictions sorted by time: only neighbours inside the gate are paired.
    """
    edges: Edges = {}
    zs: Edges = {}
    order = sorted(range(len(preds)), key=lambda j: preds[j][0])
    ptimes = [preds[j][0] for j in order]
    max_reach = max((gate * s * NS_PER_S for _, s in preds), default=0) + width
    for pi, t in enumerate(times):
        lo = bisect.bisect_left(ptimes, t - max_reach)
        hi = bisect.bisect_right(ptimes, t + max_reach)
        for oj in order[lo:hi]:
            pred, sig = preds[oj]
            off = t - pred if t < pred else max(0, t - pred - width)
            z = off / NS_PER_S / sig
            if abs(z) <= gate:
                edges[(pi, oj)] = z * z / 2 + math.log(sig / base)
                zs[(pi, oj)] = z
    return edges, zs


def _match(
    n_passages: int, n_cars: int, edges: Edges, unmatched: float
) -> tuple[dict[int, tuple[int, float]], dict[int, tuple[int, float]]]:
    """(matched, nobody): passage → (car, margin) of the best assignment, and for a
    passage left as nobody although some car was in its gate, how sure that is: forced
    to be a car, which would it be, at what extra cost."""
    matched: dict[int, tuple[int, float]] = {}
    nobody: dict[int, tuple[int, float]] = {}
    for ps, cs in _components(n_passages, n_cars, edges):
        sub = {e: v for e, v in edges.items() if e[0] in ps}
        pairs, best, _ = _solve_block(ps, cs, sub, unmatched)
        for p, c in pairs.items():
            matched[p] = (c, _margin(ps, cs, sub, unmatched, p, c, best))
        for p in ps:
            if p not in pairs:
                forced, alt, _ = _solve_block(ps, cs, sub, unmatched, must=p)
                if p in forced:
                    nobody[p] = (forced[p], alt - best)
    return matched, nobody


def _predict(
    event: Event,
    k: int,
    start_ns: int,
    anchor: tuple[int, int, int] | None,
    cum_var: list[int],
) -> tuple[int, float]:
    """(predicted UTC ns, sigma in s) of a car at control `k`: from its schedule at a time
    control, else from its last identified passage (`anchor`), else from its start."""
    ctl, idp = event.controls[k], event.identify
    due = ctl.due_ns or 0
    if ctl.kind == "time":
        pred, var = start_ns + due, (ctl.sigma_ns or idp.sigma_ns) ** 2
    elif anchor is not None:
        j, t0, var0 = anchor
        pred = t0 + due - (event.controls[j].due_ns or 0)
        var = var0 + cum_var[k] - cum_var[j]
    else:
        pred = start_ns + due
        var = idp.sigma_ns**2 + cum_var[k]
    return pred, math.sqrt(var) / NS_PER_S


def _call(
    t: Timed,
    pi: int,
    matched: dict[int, tuple[int, float]],
    nobody: dict[int, tuple[int, float]],
    cars: list[str],
    preds: list[tuple[int, float]],
    zs: Edges,
    min_margin: float,
) -> Call:
    """What HQ says of free passage `pi`: the car (`auto`) when the match leads by at
    least `min_margin`, `confirm` (with the likely car) when it does not, or `unknown`."""
    if pi not in matched:
        if pi in nobody and nobody[pi][1] < min_margin:
            oj, margin = nobody[pi]
            pred, z = preds[oj][0], round(zs[(pi, oj)], 3)
            return Call(t, "confirm", None, cars[oj], pred, round(margin, 3), z)
        return Call(t, "unknown", None)
    oj, margin = matched[pi]
    car, pred, z = cars[oj], preds[oj][0], round(zs[(pi, oj)], 3)
    if margin >= min_margin:
        return Call(t, "auto", car, car, pred, round(margin, 3), z)
    return Call(t, "confirm", None, car, pred, round(margin, 3), z)


def _calls(
    passages: list[Timed],
    cars: list[str],
    preds: list[tuple[int, float]],
    width: int,
    idp: Identify,
) -> list[Call]:
    """One control's calls, in passage order: a car a person named stands; the other
    passages are matched to the candidate `cars` by their predictions `preds`."""
    gate = idp.gate_sigmas
    calls: list[Call | None] = [
        None if t.car is None else Call(t, t.car_source or "marshal", t.car) for t in passages
    ]
    free = [i for i, cl in enumerate(calls) if cl is None]
    times = [passages[i].utc_ns for i in free]
    edges, zs = _edges(times, preds, width, gate, idp.sigma_ns / NS_PER_S)
    matched, nobody = _match(len(free), len(cars), edges, gate * gate / 4)
    for pi, i in enumerate(free):
        calls[i] = _call(passages[i], pi, matched, nobody, cars, preds, zs, idp.min_margin)
    return [cl for cl in calls if cl is not None]


def identify(
    event: Event,
    timed: Mapping[str, list[Timed]],
    starts: Mapping[str, int],
    *,
    retired: frozenset[str] | set[str] = frozenset(),
) -> Identification:
    """Identify every timed passage (`timed`: control id → its passages).

    `starts`: car → scheduled start (UTC ns) of every car expected (withdrawn cars
    left out). The event must be scheduled (`event.scheduled`). Control by control,
    in route order: the cars not yet named there are predicted from their last
    identified passage (`anchor`), and a retired car that was not seen drops out.
    """
    result = Identification()
    anchor: dict[str, tuple[int, int, int]] = {}  # car → (control index, utc_ns, var)
    gone: set[str] = set()
    cum_var = _cumulative_variance(event)
    unit = int(event.rules.time_unit_s * NS_PER_S)

    for k, ctl in enumerate(event.controls):
        passages = timed.get(ctl.id, [])
        named = {t.car for t in passages if t.car is not None}
        cars = sorted(c for c in starts if c not in named and c not in gone)
        preds = [_predict(event, k, starts[c], anchor.get(c), cum_var) for c in cars]
        result.expected[ctl.id] = sorted(
            ((c, p) for c, (p, _) in zip(cars, preds, strict=True)), key=lambda x: x[1]
        )
        # A prediction is a window [lo, lo + width] (width 0 but at a time control,
        # where a car on time arrives anywhere in its own unit) and a sigma (s).
        width = unit if ctl.kind == "time" and cars else 0
        done = _calls(passages, cars, preds, width, event.identify)
        for cl in done:
            if cl.car is not None and (cl.car not in anchor or anchor[cl.car][0] < k):
                anchor[cl.car] = (k, cl.timed.utc_ns, 0)
        seen = {cl.car for cl in done if cl.status == "auto"}
        gone.update(c for c in cars if c in retired and c not in seen)
        result.calls[ctl.id] = done
        for cl in done:
            for key in cl.timed.members:
                result.by_key[key] = cl
    return result
