"""Every shape msgspec refuses gets a field and a reason of ours, never the fallback."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp import calls
from opencdp.shape_errors import first_problem

FIELDS = ["timestamp", "sentAt", "messageId", "context", "userId", "anonymousId", "event",
          "traits", "properties", "name", "previousId", "groupId", "batch", "ip",
          "marketingPreferences", "channels", "channel", "subscribed"]
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=600), st.sampled_from(["2019-11-18T13:30:11.444Z", "2019-11-18", ""]),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4),
    max_leaves=12,
)
SHAPES = [*calls.CALLS.values(), calls.BatchEnvelope]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8))
def test_a_refused_body_is_always_explained(shape: type[msgspec.Struct], body: Any) -> None:
    try:
        msgspec.convert(body, shape)
    except msgspec.ValidationError:
        problem = first_problem(shape, body)
        field, _, why = problem.partition(": ")
        assert field and why and field != "body", problem
