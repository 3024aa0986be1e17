"""Every shape msgspec refuses gets a field and a reason of ours, never the fallback."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp import calls
from opencdp.api.admin import TokenRequest
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
    assert_explained_if_refused(shape, body)


def assert_explained_if_refused(shape: type[msgspec.Struct], body: Any) -> bool:
    """Whether msgspec accepts ``body``; if not, ``first_problem`` names a field and why."""
    try:
        msgspec.convert(body, shape)
    except msgspec.ValidationError:
        problem = first_problem(shape, body)
        field, _, why = problem.partition(": ")
        assert field and why and field != "body", problem
        return False
    return True


ADMIN_FIELDS = ["name", "accounts", "brands", "scopes", "clientId"]
ADMIN_LEAVES = st.one_of(
    LEAVES, st.sampled_from(["*", "read", "write", "admin", "web", "bad/id", "web\n", "a" * 65]),
)
ADMIN_VALUES = st.recursive(ADMIN_LEAVES, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(ADMIN_FIELDS), ADMIN_VALUES, max_size=5))
def test_a_refused_token_request_is_always_explained(body: Any) -> None:
    """Unknown fields, bounded lists, id patterns and "*"-or-a-list unions included."""
    if assert_explained_if_refused(TokenRequest, body):
        assert "clientId" not in body


class Shapes(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[list[int], msgspec.Meta(max_length=2)] | Literal["*"] | None = None
    code: Annotated[str, msgspec.Meta(pattern="^[a-z]+$")] = "a"
    tags: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["t"]
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"ids": "all"}, 'ids: must be an array or "*" (got string)'),
        ({"ids": 3}, 'ids: must be an array or "*" (got integer)'),
        ({"ids": [1, 2, 3]}, "ids: must hold 0 to 2 items (got 3)"),
        ({"ids": [1, "x"]}, "ids[1]: must be an integer (got string)"),
        ({"code": "A"}, "code: does not have the expected form"),
        ({"tags": []}, "tags: must hold at least 1 item (got 0)"),
        ({"other": 1}, "other: unknown field (known: ids, code, tags)"),
        ({"y" * 100: 1}, "y" * 64 + "…: unknown field (known: ids, code, tags)"),
    ],
)
def test_unions_of_kinds_list_lengths_patterns_and_unknown_fields(
    body: dict[str, Any], problem: str
) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, Shapes)
    assert first_problem(Shapes, body) == problem
