"""Passage detection on exact ticks (known truth, no I/O)."""

from checkpoint.core.detector import Detector, Passage, RateLimiter

MS = 1_000_000


def det(min_break_ms=10, lockout_ms=1000):
    return Detector({"beam": ("beam", min_break_ms * MS, lockout_ms * MS)})


def drive(d, edges):
    out = []
    for t, active in edges:
        out += d.edge("beam", t, active)
    return out


def test_a_break_longer_than_min_break_is_one_passage_at_the_leading_edge():
    d = det()
    assert drive(d, [(1_000 * MS + 7, True), (1_150 * MS, False)]) == [
        Passage("beam", "beam", 1_000 * MS + 7)
    ]


def test_glitch_shorter_than_min_break_is_not_a_passage():
    d = det()
    assert drive(d, [(100 * MS, True), (109 * MS, False)]) == []
    assert d.stats()["beam"]["glitches"] == 1


def test_wheel_gaps_inside_lockout_belong_to_the_same_car():
    d = det()
    car = [(0, True), (80 * MS, False), (95 * MS, True), (160 * MS, False), (400 * MS, True)]
    car += [(450 * MS, False)]
    assert drive(d, car) == [Passage("beam", "beam", 0)]
    assert d.stats()["beam"]["suppressed"] == 2


def test_lockout_counts_from_previous_passage_leading_edge_not_from_last_break():
    d = det()
    edges = [(0, True), (50 * MS, False), (990 * MS, True), (1_020 * MS, False)]
    edges += [(1_001 * MS, True), (1_100 * MS, False)]
    # The break at 990 ms is inside the lockout; the one at 1001 ms is a new car.
    assert drive(d, edges) == [Passage("beam", "beam", 0), Passage("beam", "beam", 1_001 * MS)]


def test_passage_is_reported_while_the_beam_is_still_broken():
    d = det()
    assert d.edge("beam", 5 * MS, True) == []
    assert d.next_due() == 15 * MS
    assert d.advance(14 * MS) == []
    assert d.advance(15 * MS) == [Passage("beam", "beam", 5 * MS)]
    # ...and not a second time when the beam is released.
    assert d.edge("beam", 900 * MS, False) == []
    assert d.next_due() is None


def test_repeated_level_and_unknown_input_are_ignored():
    d = det()
    assert d.edge("beam", 0, False) == []
    assert d.edge("nope", 0, True) == []
    assert drive(d, [(0, True), (1 * MS, True), (30 * MS, False)]) == [Passage("beam", "beam", 0)]


def test_inputs_are_independent():
    d = Detector({"a": ("beam", 10 * MS, 1000 * MS), "b": ("manual", 30 * MS, 1000 * MS)})
    out = d.edge("a", 0, True) + d.edge("b", 5 * MS, True) + d.edge("a", 20 * MS, False)
    out += d.edge("b", 20 * MS, False)  # 15 ms press: below b's 30 ms
    assert out == [Passage("a", "beam", 0)]


def test_rate_limiter_bounds_edges_and_keeps_the_final_level():
    lim = RateLimiter(max_per_s=100)
    passed = []
    level = False
    for i in range(5000):  # 5 kHz chatter for one second
        level = not level
        passed += lim.offer(i * 200_000, level)
    assert len(passed) == 101
    assert [f for _, _, f in passed] == [False] * 100 + [True]
    assert lim.dropped == 4899
    assert lim.faulted(1_000 * MS)
    # The final level comes out, flagged, once the window has passed.
    assert lim.poll(2_000 * MS) == [((5000 - 1) * 200_000, level, True)]
    assert not lim.faulted(20_000 * MS)


def test_chatter_never_makes_a_passage_even_when_the_limit_cuts_a_break():
    # The limit falls on a "broken" edge and the release comes ~1 s later: without
    # the fault flag the detector would see one long break and call it a car.
    d = det()
    lim = RateLimiter(max_per_s=10)
    out = []
    for i in range(400):
        for t, a, f in lim.offer(i * 2 * MS, i % 2 == 0):
            out += d.edge("beam", t, a, f)
        out += d.advance(i * 2 * MS)
    for t, a, f in lim.poll(2_000 * MS):
        out += d.edge("beam", t, a, f)
    out += d.advance(3_000 * MS)
    assert out == []
    assert d.stats()["beam"]["chatter"] == 2
    # A real car afterwards still counts.
    out = d.edge("beam", 5_000 * MS, True) + d.edge("beam", 5_100 * MS, False)
    assert out == [Passage("beam", "beam", 5_000 * MS)]


def test_rate_limiter_passes_normal_traffic_untouched():
    lim = RateLimiter(max_per_s=200)
    edges = [(i * 100 * MS, i % 2 == 0) for i in range(50)]
    out = []
    for t, a in edges:
        out += lim.offer(t, a)
    assert out == [(t, a, False) for t, a in edges] and lim.dropped == 0
