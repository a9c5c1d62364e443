"""Is the configured pairing convention right? One vote per named second (pure).

Only the first sentence of each named second (its onset) is evidence: one outside the
band, within the guard of a pulse, or naming a second whose pulse has not come votes
against the configured convention. When ``votes`` of the last ``window`` onsets voted
so the mismatch is raised (pairing.py then lets no sample leave) and `advice` says
what was seen and what to change; ``clear`` consecutive clean onsets lower it again.
"""

from __future__ import annotations

from collections import Counter, deque


class ConventionVote:
    """The onsets' votes, the refused phases, and the mismatch verdict with its advice."""

    def __init__(
        self, convention: str, *, guard_ns: int, votes: int, window: int, clear: int
    ) -> None:
        self.convention = convention
        self.guard_ns = guard_ns
        self.votes_needed = votes
        self.clear_after = clear
        self.mismatch = False
        #: While `mismatch` stands: what was seen and what to change (else None).
        self.advice: str | None = None
        self._votes: deque[bool] = deque(maxlen=window)
        self._why: Counter[str] = Counter()  # the kind of each vote against
        self._clean = 0
        self._refused: deque[int] = deque(maxlen=16)  # phases of refused onsets
        self._voted_s: int | None = None

    def refused(self, phase: int) -> None:
        """An onset was refused at this phase (quoted in the advice)."""
        self._refused.append(phase)

    def vote(self, utc_s: int, why: str, against: bool) -> bool:
        """One vote per named second; True when this vote raised the mismatch."""
        if self._voted_s == utc_s:
            if against and self._votes and not self._votes[-1]:
                self._votes[-1] = True  # a contrary sentence of the same second flips it
                self._why[why] += 1
                self._clean = 0
            return False
        self._voted_s = utc_s
        self._votes.append(against)
        if against:
            self._why[why] += 1
            self._clean = 0
        else:
            self._clean += 1
        if not self.mismatch and sum(self._votes) >= self.votes_needed:
            self.mismatch = True
            self.advice = self._advise()
            return True
        if self.mismatch and self._clean >= self.clear_after:
            self.mismatch = False
            self.advice = None
            self._why.clear()
            self._votes.clear()
        return False

    def _advise(self) -> str:
        """What the refused onsets looked like, and what to change."""
        why = self._why.most_common(1)[0][0] if self._why else "late"
        guard = self.guard_ns // 1_000_000
        seen = median(self._refused)
        saw = f" (seen: {round(seen / 1e6)} ms after the pulse)" if seen is not None else ""
        return self._what_to_change(why, guard) + saw

    def _what_to_change(self, why: str, guard: int) -> str:
        if why == "ambiguous":
            return (
                f"time sentences arrive within {guard} ms of a PPS pulse, so the second they "
                "name cannot be told: check the PPS wiring and the receiver's output timing"
            )
        if self.convention == "after":
            return (
                "time sentences name a second before its PPS pulse (the first of each second "
                "arrives just ahead of the next pulse): if the receiver announces the coming "
                'second set gps.convention = "before"; if its time sentences come at the end of '
                "a long burst, run `checkpoint gps configure` (fewer sentences) or raise the "
                "baud rate; else check the PPS wiring"
            )
        return (
            "time sentences arrive soon after a PPS pulse, naming the second that pulse "
            'began: set gps.convention = "after"'
        )


def median(values: deque[int]) -> int | None:
    """The upper median of a few ints (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
