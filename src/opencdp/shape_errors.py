"""Where and why a decoded JSON value does not fit a msgspec type: ``"<field>: <why>"``.

msgspec says *that* a value does not convert; its English message may change between
releases, so nothing here reads it. Once a conversion has failed, ``first_problem``
walks the value beside the type's own description (``msgspec.inspect``) and names the
first field that breaks it, in the value's key order, then the missing required fields.
Leaves are checked by msgspec itself (by exception type only), so a value accepted by
``msgspec.convert`` is never reported here, and the rules stay msgspec's.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

_KINDS: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}
_WANTS: dict[type[mi.Type], str] = {
    mi.StrType: "a string",
    mi.BoolType: "a boolean",
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.ListType: "an array",
    mi.DictType: "an object",
    mi.StructType: "an object",
}
_SHOWN_KEY = 64  # an unknown key is named up to this many characters
_UNMATCHED = "does not have the expected form"  # a pattern's; its description says which


def json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type: ``"array"``, ``"null"``, ``"integer"`` …"""
    return "null" if value is None else _KINDS.get(type(value), type(value).__name__)


def first_problem(shape: type[msgspec.Struct], value: Any) -> str:
    """``"<path>: <why>"`` for the first part of ``value`` that does not convert to ``shape``."""
    found = _check(_info(shape), value, "")
    return found or "body: does not match the expected shape"


@functools.cache
def _info(shape: type[msgspec.Struct]) -> mi.Type:
    return mi.type_info(shape)


def _at(path: str, why: str) -> str:
    return f"{path or 'body'}: {why}"


def _check(info: mi.Type, value: Any, path: str) -> str | None:
    if isinstance(info, mi.Metadata):  # a description, for the OpenAPI document
        problem = _check(info.type, value, path)
        form = (info.extra_json_schema or {}).get("description")
        if form and problem == _at(path, _UNMATCHED):
            return _at(path, f"must be {form}")
        return problem
    if isinstance(info, mi.UnionType):
        return _check_union(info, value, path)
    if isinstance(info, mi.AnyType | mi.NoneType):
        return None if isinstance(info, mi.AnyType) or value is None else _at(path, "must be null")
    if isinstance(info, mi.DateTimeType):
        return None if _is_time(value, info) else _at(path, "not an ISO-8601 time")
    if isinstance(info, mi.LiteralType):
        return _check_literal(info, value, path)
    want = _WANTS.get(type(info))
    if want is None:  # a kind our shapes do not use: leave it to the fallback message
        return None
    if not _same_kind(info, value):
        return _at(path, f"must be {want} (got {json_kind(value)})")
    if isinstance(info, mi.StructType):
        return _check_struct(info, value, path)
    if isinstance(info, mi.ListType):
        return _check_items(info, value, path)
    if isinstance(info, mi.StrType):
        return _check_length(info, value, path)
    return None


def _check_union(info: mi.UnionType, value: Any, path: str) -> str | None:
    """``T | None``: null passes, anything else is checked against ``T``. A union of
    several kinds (``list[str] | Literal["*"]``) reports the problem of the member of
    the value's own kind, or, when no member has it, every kind it may be."""
    others = [t for t in info.types if not isinstance(t, mi.NoneType)]
    if value is None and len(others) < len(info.types):
        return None
    if len(others) == 1:
        return _check(others[0], value, path)
    problems = [_check(t, value, path) for t in others]
    if any(problem is None for problem in problems):
        return None
    own_kind = [(t, p) for t, p in zip(others, problems, strict=True) if _kind_fits(t, value)]
    if len(own_kind) == 1 and not isinstance(_unwrap(own_kind[0][0]), mi.LiteralType):
        return own_kind[0][1]  # e.g. the bad item of a list
    wants = " or ".join(_wanted(t) for t in others)
    return _at(path, f"must be {wants} (got {json_kind(value)})")


def _check_literal(info: mi.LiteralType, value: Any, path: str) -> str | None:
    """A fixed value, such as an identify's ``event``: ``must be "identify"``."""
    if any(type(value) is type(allowed) and value == allowed for allowed in info.values):
        return None
    shown = ", ".join(msgspec.json.encode(allowed).decode() for allowed in info.values)
    return _at(path, f"must be {shown}" if len(info.values) == 1 else f"must be one of {shown}")


def _check_struct(info: mi.StructType, value: dict[str, Any], path: str) -> str | None:
    fields = {f.encode_name: f for f in info.fields}
    prefix = f"{path}." if path else ""
    for key, item in value.items():
        field = fields.get(key)
        if field is None and info.forbid_unknown_fields:
            shown = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "…"
            known = ", ".join(f.encode_name for f in info.fields)
            return f"{prefix}{shown}: unknown field (known: {known})"
        if field is not None:
            problem = _check(field.type, item, prefix + key)
            if problem is not None:
                return problem
    for field in info.fields:
        if field.required and field.encode_name not in value:
            return f"{prefix}{field.encode_name}: required"
    return None


def _check_items(info: mi.ListType, value: list[Any], path: str) -> str | None:
    low, high = info.min_length or 0, info.max_length
    if len(value) < low or (high is not None and len(value) > high):
        bounds = f"at least {low}" if high is None else f"{low} to {high}"
        noun = "item" if bounds == "at least 1" else "items"
        return _at(path, f"must hold {bounds} {noun} (got {len(value)})")
    for index, item in enumerate(value):
        problem = _check(info.item_type, item, f"{path}[{index}]")
        if problem is not None:
            return problem
    return None


def _check_length(info: mi.StrType, value: str, path: str) -> str | None:
    if info.min_length is not None and len(value) < info.min_length:
        return _at(path, "must not be empty" if info.min_length == 1 else "is too short")
    if info.max_length is not None and len(value) > info.max_length:
        return _at(path, f"must be at most {info.max_length} characters")
    if info.pattern is not None and re.search(info.pattern, value) is None:
        return _at(path, _UNMATCHED)
    return None


def _unwrap(info: mi.Type) -> mi.Type:
    return info.type if isinstance(info, mi.Metadata) else info


def _kind_fits(info: mi.Type, value: Any) -> bool:
    """Whether ``value`` is of the JSON kind ``info`` wants (whatever its content)."""
    info = _unwrap(info)
    if isinstance(info, mi.LiteralType):
        return any(type(value) is type(allowed) for allowed in info.values)
    return type(info) in _WANTS and _same_kind(info, value)


def _wanted(info: mi.Type) -> str:
    """What a member of a union wants, as a message says it: ``"*"``, ``an array``…"""
    info = _unwrap(info)
    if isinstance(info, mi.LiteralType):
        return " or ".join(msgspec.json.encode(allowed).decode() for allowed in info.values)
    return _WANTS.get(type(info), "another kind")


def _same_kind(info: mi.Type, value: Any) -> bool:
    if isinstance(info, mi.BoolType | mi.IntType):
        return type(value) is (bool if isinstance(info, mi.BoolType) else int)
    if isinstance(info, mi.FloatType):
        return type(value) in (int, float)
    expected = {mi.StrType: str, mi.ListType: list, mi.DictType: dict, mi.StructType: dict}
    return type(value) is expected[type(info)]


def _is_time(value: Any, info: mi.DateTimeType) -> bool:
    """Whether msgspec itself accepts ``value`` as the time ``info`` describes."""
    try:
        msgspec.convert(value, _AWARE_TIME if info.tz else datetime)
    except msgspec.ValidationError:
        return False
    return True


_AWARE_TIME = Annotated[datetime, msgspec.Meta(tz=True)]
