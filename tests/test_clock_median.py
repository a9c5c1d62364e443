"""The refit's median distance (its robust sigma) found without a second sort.

`regression._median_distance` must give exactly what sorting the distances gives: the
fit's outlier threshold, hence every bound, depends on it to the last bit.
"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.core import regression as clock

VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0]),  # ties and exact halves
)


def by_sorting(s: list[float], med: float) -> float:
    return clock._median([abs(r - med) for r in s])


@settings(max_examples=2000, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=60), pick=st.integers(0, 3))
def test_median_distance_is_the_sorted_one_to_the_bit(values, pick):
    s = sorted(values)
    # About the median (what the fit asks), or about any other point.
    med = [clock._middle(s), s[0], s[-1], 0.0][pick]
    got = clock._median_distance(s, med)
    assert got == by_sorting(s, med)
    assert math.copysign(1.0, got) == math.copysign(1.0, by_sorting(s, med))


def test_non_finite_values_fall_back_to_the_sort():
    s = sorted([1.0, 2.0, math.inf])
    assert clock._median_distance(s, 2.0) == by_sorting(s, 2.0) == 1.0
    s = [1.0, math.nan, 3.0]
    assert math.isnan(clock._median_distance(s, 1.0)) == math.isnan(by_sorting(s, 1.0))
