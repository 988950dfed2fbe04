"""Validation messages as sentences naming the field and the limit, from what msgspec and Litestar report."""

from __future__ import annotations

import re
from typing import Any

# What a field's pattern means, by the field's name (an argument is `arguments[3]`, named `arguments` here).
PATTERN_MEANINGS = {
    "jobName": (
        "must not contain control characters (U+0000 to U+001F, U+007F to U+009F) or bidirectional formatting "
        "characters (U+202A to U+202E, U+2066 to U+2069)"
    ),
    "arguments": (
        "must not contain NUL, C1 control characters (U+0080 to U+009F) or bidirectional formatting characters "
        "(U+202A to U+202E, U+2066 to U+2069)"
    ),
    "program": "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or a digit",
    "Idempotency-Key": "must be visible ASCII characters (no spaces or controls)",
    "Last-Event-ID": "must be a byte offset as an event id gives it: 1 to 18 digits",
}
# The values a parameter with a fixed set of them takes, by the parameter's name.
ENUM_VALUES = {"stream": "stdout or stderr"}
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "object": "a JSON object",
    "array": "an array",
    "null": "null",
    "datetime": "an ISO 8601 date-time",
    "bytes": "a string",
}
_EXPECTED_GOT = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")
_LENGTH = re.compile(r"^Expected `(?P<kind>str|array|object)` of length (?P<op>[<>]=?) (?P<limit>\d+)$")
_BOUND = re.compile(r"^Expected `(?:int|float)` (?P<op>[<>]=?) (?P<limit>-?[0-9.e+]+)$")
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `(?P<name>[^`]+)`")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.+)$")
_BOUND_WORDS = {"<=": "at most", "<": "less than", ">=": "at least", ">": "more than"}


def _type_name(spelled: str) -> str:
    names = [_TYPE_NAMES.get(part.strip(), part.strip()) for part in spelled.split("|")]
    return " or ".join(dict.fromkeys(names))


def _pattern_meaning(field: str) -> str:
    return PATTERN_MEANINGS.get(re.sub(r"\[\d+\]$", "", field), "does not have the required form")


def _length_of(value: Any) -> int | None:  # noqa: ANN401  (any decoded JSON value)
    return len(value) if isinstance(value, str | list | dict) else None


def sentence(field: str, message: str, value: Any = None) -> str:  # noqa: ANN401, PLR0911  (one case per kind)
    """`message` (msgspec's or Litestar's wording) as a sentence about `field`; `value` is what the client sent,
    when known, to say how far off it is."""
    subject = "the body" if field == "body" else field
    if match := _EXPECTED_GOT.match(message):
        expected, got = _type_name(match["expected"]), _type_name(match["got"])
        return f"{subject} must be {expected}, not {got}"
    if match := _LENGTH.match(message):
        unit = "characters" if match["kind"] == "str" else "items"
        limit, op = int(match["limit"]), match["op"]
        length = _length_of(value)
        verb = "is" if unit == "characters" else "has"
        if op.startswith("<"):
            stated = f"{verb} {length} {unit}" if length is not None else f"has more than {limit} {unit}"
            return f"{subject} {stated}; the limit is {limit}"
        if limit == 1 and length in (0, None):
            return f"{subject} is empty; it needs at least 1 {unit.removesuffix('s')}"
        return f"{subject} {verb} {length} {unit}; it needs at least {limit}"
    if match := _BOUND.match(message):
        shown = f" is {value}" if isinstance(value, int | float | str) and value != "" else " is out of range"
        return f"{subject}{shown}; it must be {_BOUND_WORDS[match['op']]} {match['limit']}"
    if "matching regex" in message:
        return f"{subject} {_pattern_meaning(field)}"
    if _UNKNOWN_FIELD.search(message):
        return f"{subject} is not a known field"
    if _MISSING_FIELD.search(message):
        return f"{subject} is required"
    if message == "Expected `datetime` with a timezone component":
        return f"{subject} needs a UTC offset, as in 2026-11-28T08:00:00+01:00 or 2026-11-28T07:00:00Z"
    if message.startswith("Invalid RFC3339 encoded datetime"):
        return f"{subject} is not an ISO 8601 date-time such as 2026-11-28T08:00:00Z"
    if message == "Number out of range":
        return f"{subject} is a number too large to represent"
    if match := _ENUM.match(message):
        allowed = ENUM_VALUES.get(field, "one of the values the OpenAPI document lists")
        return f"{subject} is {match['value']}; use {allowed}"
    return f"{subject}: {message}"
