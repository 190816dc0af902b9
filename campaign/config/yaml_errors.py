"""YAML syntax errors said as the fix.

PyYAML reports "mapping values are not allowed here" for a colon inside an unquoted subject
and "expected <block end>, but found '<block mapping start>'" for a line indented one space
too few. The mark (line, column) and the text of the line together say which common mistake
it is; each one here is explained with what to type. The raw reason is kept only for the
rare errors none of these recognise.
"""

from __future__ import annotations

import re

import yaml

_KEY_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[^\s:#][^:#]*?):(?:\s+(?P<value>.*))?$"
)
_STEP_ITEM = re.compile(r"^(?P<indent>\s*)-\s")
_ID = re.compile(r"^\s*(?:-\s+)?id:\s*['\"]?(?P<id>[^'\"#\s]+)")
_QUOTES = {'"': 'double quote (")', "'": "single quote (')"}
_BRACKETS = {"flow sequence": ("[", "]"), "flow mapping": ("{", "}")}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _key(line: str) -> str | None:
    match = _KEY_LINE.match(line.rstrip())
    return match.group("key").strip() if match else None


def _key_column(line: str) -> int:
    """Where a line's key starts, after any `- `: what the next key must line up with."""
    match = _KEY_LINE.match(line.rstrip())
    if match and match.group("dash"):
        return len(match.group("indent")) + len(match.group("dash"))
    return _indent(line)


def step_at(lines: list[str], number: int) -> str:
    """`step 2 (pain-types)` for a line inside the `steps:` list, found from the text alone
    (the file did not parse); empty outside it."""
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "steps:"), None)
    if start is None or number - 1 <= start:
        return ""
    count, step_id, item_indent = 0, "", None
    for line in lines[start + 1 : number]:
        if _content(line) and not line[:1].isspace():
            return ""  # a later top-level setting: not in the steps
        item = _STEP_ITEM.match(line)
        if item and (item_indent is None or len(item.group("indent")) == item_indent):
            item_indent = len(item.group("indent"))
            count, step_id = count + 1, ""
        found = _ID.match(line)
        if found and count:
            step_id = found.group("id")
    if not count:
        return ""
    return f"step {count} ({step_id})" if step_id else f"step {count}"


def _colon_in_value(line: str) -> str | None:
    """A value with `: ` in it, unquoted: YAML reads a second setting on the same line."""
    match = _KEY_LINE.match(line.rstrip())
    if not match or not match.group("value"):
        return None
    value = match.group("value")
    if value[0] in "'\"" or ": " not in value + " ":
        return None
    key = match.group("key").strip()
    quoted = value.replace('"', '\\"')
    return (
        f'the {key} has ": " in it, which YAML reads as the start of another setting; '
        f'put the {key} in quotes: {key}: "{quoted}"'
    )


def _line_up(lines: list[str], number: int, since: int) -> str:
    """Which earlier line the indentation of line `number` was most likely meant to match:
    the nearest indentation used between `since` and it, the line just above on a tie."""
    line = lines[number - 1]
    here = _indent(line)
    earlier = [
        (n, lines[n - 1])
        for n in range(number - 1, max(since, 1) - 1, -1)
        if _content(lines[n - 1])
    ]
    if not earlier:
        return f"line {number} is not indented like the lines around it"
    best_n, best = min(earlier, key=lambda pair: abs(_key_column(pair[1]) - here))
    column = _key_column(best)
    what = f"`{_key(best)}:`" if _key(best) else f"line {best_n}"
    name = f"`{_key(line)}:`" if _key(line) else "this line"
    if column == here:
        return f"{name} is indented like {what} on line {best_n} but does not belong there"
    return (
        f"{name} is indented {_spaces(here)}; line it up with {what} on line {best_n} "
        f"({_spaces(column)} from the left)"
    )


def _stray_dash(lines: list[str], number: int) -> str:
    """A `- ` where the lines above are settings of one item, not items of a list."""
    above = next((n for n in range(number - 1, 0, -1) if _STEP_ITEM.match(lines[n - 1])), None)
    if above is None:
        return "`- ` starts a list item here, but the lines above are settings; remove the `- `"
    column = _indent(lines[above - 1])
    return (
        "`- ` starts a new list item here, inside the item above; remove the `- `, or line it "
        f"up with the `- ` on line {above} ({_spaces(column)} from the left)"
    )


def _spaces(count: int) -> str:
    return "1 space" if count == 1 else f"{count} spaces"


def _too_deep(lines: list[str], number: int) -> str | None:
    """A line indented further than the one above, which already has its value."""
    above = next((n for n in range(number - 1, 0, -1) if _content(lines[n - 1])), None)
    if above is None or _indent(lines[number - 1]) <= _key_column(lines[above - 1]):
        return None
    name = _key(lines[number - 1]) or "this line"
    key = _key(lines[above - 1]) or f"line {above}"
    return (
        f"`{name}:` is indented further than `{key}:` on line {above}, which already has a "
        f"value; line it up with `{key}:` ({_spaces(_key_column(lines[above - 1]))} from the left)"
    )


def _unclosed_quote(lines: list[str], upto: int) -> tuple[int, str] | None:
    """A value that opens a quote and does not close it on its line: YAML then reads on,
    across later lines, and stumbles somewhere far below, where the error points."""
    for number, line in enumerate(lines[:upto], 1):
        match = _KEY_LINE.match(line.rstrip())
        value = (match.group("value") or "") if match else ""
        if value[:1] in _QUOTES and value[0] not in value[1:].replace('\\"', ""):
            return number, (
                f"the {_QUOTES[value[0]]} opened on this line is never closed; "
                "add it at the end of the value"
            )
    return None


def explain(exc: yaml.MarkedYAMLError, lines: list[str]) -> tuple[int | None, str]:
    """The line to fix and what to do, for a YAML error in a file of `lines`."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    text = lines[line - 1] if line and line <= len(lines) else ""
    problem, context = exc.problem or "", exc.context or ""
    opened = exc.context_mark.line + 1 if exc.context_mark else None
    unclosed = _unclosed_quote(lines, line or len(lines))
    if unclosed:
        return unclosed
    if "\t" in text and (text.lstrip(" ").startswith("\t") or "'\\t'" in problem):
        return line, "this line is indented with a tab; YAML needs spaces: replace the tab"
    if problem.startswith("mapping values are not allowed") and line:
        return line, _colon_in_value(text) or _too_deep(lines, line) or _raw(problem)
    if context == "while scanning a quoted scalar" and opened:
        quote = lines[opened - 1][exc.context_mark.column] if exc.context_mark else '"'
        return opened, (
            f"the {_QUOTES.get(quote, 'quote')} opened on this line is never closed; "
            "add it at the end of the value"
        )
    for kind, (start, end) in _BRACKETS.items():
        if context == f"while parsing a {kind}" and opened:
            return opened, f"the `{start}` opened on this line is never closed; add `{end}`"
    if "but found '<scalar>'" in problem and line and re.search(r":\s+['\"]", text):
        key = _key(text) or "value"
        return line, (
            f"text follows the closing quote; put the whole {key} inside the quotes "
            "(use ' inside \" \" or \" inside ' ')"
        )
    if problem.startswith("expected <block end>") and line:
        if "but found '-'" in problem:
            return line, _stray_dash(lines, line)
        return line, _line_up(lines, line, opened or 1)
    if "cannot start any token" in problem or "undefined alias" in problem:
        key = _key(text) or "value"
        return line, f"a value cannot start with that character; put the {key} in quotes"
    return line, _raw(problem)


def _raw(problem: str) -> str:
    return f"YAML syntax: {problem or 'not valid YAML'}"
