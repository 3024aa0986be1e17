"""Pure rules for linking and merging customer ids (the merge guardrails live here)."""

from __future__ import annotations

PLACEHOLDER_IDS = frozenset(
    {"null", "undefined", "none", "nil", "nan", "0", "anonymous", "guest", "[object object]"}
)
MAX_ANONYMOUS_IDS = 1000


def is_placeholder(value: str) -> bool:
    """True for ids that must never link or merge profiles (``""``, ``"null"``, ``"guest"``…)."""
    stripped = value.strip()
    return stripped == "" or stripped.lower() in PLACEHOLDER_IDS
