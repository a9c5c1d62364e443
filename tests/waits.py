"""The one way tests wait: `sim.waits` (shared with the simulator and the benchmarks).

Every wait in the suite is on a condition with a deadline, never a fixed sleep.
"Nothing happened" is proven with a marker that arrives after the thing would have (a
later message, a later record), then asserting the thing is absent. A test's timeout is
an AssertionError naming what it waited for.
"""

from __future__ import annotations

from sim.waits import listening, wait_for

__all__ = ["listening", "wait_for"]
