"""The NMEA checksum, computed by folding the sentence's bytes as one integer."""

import functools
import operator

from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.core import nmea


@settings(max_examples=1000, deadline=None)
@given(body=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300))
def test_checksum_is_the_xor_of_every_byte(body):
    assert nmea._checksum(body) == functools.reduce(operator.xor, body.encode(), 0)


def test_a_real_sentence_checks():
    line = "$GNRMC,140005.00,A,3249.96800,N,11716.27800,W,0.02,,270425,,,A*4E"
    assert nmea._checksum(line[1 : line.index("*")]) == 0x4E
    assert nmea.NmeaParser().feed(line, 0) is not None
