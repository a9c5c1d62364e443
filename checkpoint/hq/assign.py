"""Minimum-cost one-to-one assignment (the Hungarian method), pure Python.

`solve(cost)` takes an n x m matrix (n <= m, lists of floats) and returns, for each
row, the column it is assigned to, minimising the total cost. Shortest augmenting
paths with potentials (Kuhn-Munkres as Jonker and Volgenant formulate it): O(n^2 m),
a few milliseconds for the 20 x 20 blocks identification hands it on a Pi.

Forbidden pairs are given a large finite cost (`FORBIDDEN`), never infinity, so the
potentials stay finite; callers build matrices that always have a cheaper
feasible assignment and then ignore any pair at `FORBIDDEN`.
"""

from __future__ import annotations

FORBIDDEN = 1e9


def solve(cost: list[list[float]]) -> list[int]:
    """Column index for each row of `cost` (n rows <= m columns) at minimum total cost."""
    n = len(cost)
    if n == 0:
        return []
    m = len(cost[0])
    if m < n:
        raise ValueError(f"need rows <= columns, got {n} x {m}")
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)  # p[j]: the row (1-based) holding column j; 0 = free
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            row = cost[i0 - 1]
            ui0 = u[i0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - ui0 - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    out = [-1] * n
    for j in range(1, m + 1):
        if p[j]:
            out[p[j] - 1] = j - 1
    return out


def total(cost: list[list[float]], cols: list[int]) -> float:
    """The cost of an assignment returned by `solve`."""
    return sum(cost[i][j] for i, j in enumerate(cols))
