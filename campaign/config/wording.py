"""Validation errors in a marketer's words.

pydantic says "String should have at least 1 character" or "Input should be a valid URL,
relative URL without a base": true, but it names neither the setting nor the fix. Each kind
of error here becomes one sentence that starts with the setting's name and says what to
write instead. Which setting and which step it is comes from `campaign.config.schedule`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_core import ErrorDetails

_QUOTED = re.compile(r"'([^']*)'")

# What a value of each kind looks like, for "must be ..." sentences.
_KINDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list: one `- item` per line below it, or [a, b] on its own line",
    "dict_type": "a group of settings, each on its own line below it, indented",
    "model_type": "a group of settings, each on its own line below it, indented",
    "model_attributes_type": "a group of settings, each on its own line below it, indented",
    "time_type": "a time of day like 09:00 or 17:30 (in quotes)",
    "time_parsing": "a time of day like 09:00 or 17:30 (in quotes)",
    "url_type": "a full address starting with https://, like https://clinic.example.com/book",
    "url_parsing": "a full address starting with https://, like https://clinic.example.com/book",
    "url_scheme": "a full address starting with https://, like https://clinic.example.com/book",
}

# What a setting whose pattern failed may contain, by the last part of its name.
_PATTERNS = {
    "id": "only lowercase letters, digits and '-', starting with a letter or digit "
    "(like pain-types)",
}


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice a typo most likely meant, or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` Did you mean `x`?` or nothing, to end a sentence with."""
    match = closest(word, choices)
    return f" Did you mean `{match}`?" if match else ""


def _unknown_key(name: str, leaf: str, known: Sequence[str]) -> str:
    hint = did_you_mean(leaf, known)
    listing = f" Settings here: {', '.join(known)}." if known else ""
    return f"{name} is not a setting here.{hint}{listing}"


def _literal(name: str, value: Any, expected: str) -> str:
    options = _QUOTED.findall(expected) or [expected]
    hint = did_you_mean(str(value), options) if isinstance(value, str) else ""
    return f"{name}: {value!r} is not one of {', '.join(options)}.{hint}"


def _bound(word: str) -> Callable[[str, ErrorDetails], str]:
    def say(name: str, error: ErrorDetails) -> str:
        limit = next(iter(error.get("ctx", {}).values()), "?")
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # "at most 10000", not "10000.0"
        return f"{name} must be {word} {limit}"

    return say


def _short(name: str, error: ErrorDetails) -> str:
    least = error.get("ctx", {}).get("min_length", 1)
    if least == 1:
        return f"{name} must not be empty"
    return f"{name} must have at least {least} characters"


def _long(name: str, error: ErrorDetails) -> str:
    most = error.get("ctx", {}).get("max_length")
    value = error.get("input")
    size = f" (it has {len(value)})" if isinstance(value, str | list) else ""
    return f"{name} may have at most {most} characters{size}; shorten it"


def _list_size(word: str) -> Callable[[str, ErrorDetails], str]:
    def say(name: str, error: ErrorDetails) -> str:
        if isinstance(error.get("input"), str):  # a text whose own check came first
            return (_short if word == "at least" else _long)(name, error)
        ctx = error.get("ctx", {})
        count = ctx.get("min_length" if word == "at least" else "max_length")
        return f"{name} needs {word} {count} item(s)"

    return say


def _pattern(name: str, _error: ErrorDetails) -> str:
    leaf = name.rpartition(".")[2]
    allowed = _PATTERNS.get(leaf, "only lowercase letters, digits and '_'")
    return f"{name} may contain {allowed}"


_SENTENCES: dict[str, Callable[[str, ErrorDetails], str]] = {
    "missing": lambda name, _e: f"{name} is missing; add a `{name.rpartition('.')[2]}:` line",
    "string_too_short": _short,
    "string_too_long": _long,
    "string_pattern_mismatch": _pattern,
    "greater_than": _bound("more than"),
    "greater_than_equal": _bound("at least"),
    "less_than": _bound("less than"),
    "less_than_equal": _bound("at most"),
    "too_short": _list_size("at least"),
    "too_long": _list_size("at most"),
}


def plain_message(error: ErrorDetails, name: str, known: Sequence[str]) -> str:
    """One validation error as a sentence about the setting `name` (`subject`,
    `sender.from`); `known` lists the settings allowed beside it, for unknown keys."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(name, name.rpartition(".")[2], known)
    if kind == "literal_error":
        return _literal(name, error.get("input"), str(error.get("ctx", {}).get("expected", "")))
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}"
    if kind in _SENTENCES:
        return _SENTENCES[kind](name, error)
    message = error["msg"].removeprefix("Value error, ")
    return f"{name}: {message}"
