"""Jinja's errors said as the fix.

Jinja reports a misspelt name as "'clinc' is undefined", a misspelt attribute as "'dict
object' has no attribute 'boking'" and a missing `{% endfor %}` at the end of the file. A
marketer needs the name meant, the names there are, and the line where the block opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2

from campaign.config.wording import closest, did_you_mean

_UNDEFINED = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_NO_ATTRIBUTE = re.compile(r"has no (?:attribute|element) '?(?P<name>[^']+?)'?$")
_INNERMOST = re.compile(r"innermost block that needs to be closed is '(?P<tag>\w+)'")
_UNKNOWN_TAG = re.compile(r"^Encountered unknown tag '(?P<tag>\w+)'")
_EXPECTED = re.compile(r"^expected token '(?P<want>[^']+)', got '(?P<got>[^']+)'")
TAGS = (
    "if",
    "elif",
    "else",
    "endif",
    "for",
    "endfor",
    "block",
    "endblock",
    "extends",
    "include",
    "import",
    "from",
    "macro",
    "endmacro",
    "call",
    "endcall",
    "set",
    "endset",
    "filter",
    "endfilter",
    "with",
    "endwith",
    "raw",
    "endraw",
    "autoescape",
    "endautoescape",
)
_BLOCKS = ("if", "for", "block", "macro", "call", "filter", "with", "autoescape")


def _names_in(value: Any) -> list[str] | None:
    """What may follow `value.`: a dict's keys, or the fields a stand-in object knows."""
    if isinstance(value, Mapping):
        return [str(key) for key in value]
    names = getattr(value, "field_names", None)
    return list(names) if isinstance(names, tuple | list) else None


def _resolve(expression: str, context: Mapping[str, Any]) -> tuple[bool, Any]:
    """The value `links` or `next_step.foo` stands for in the context, if it is there."""
    first, *rest = expression.split(".")
    if first not in context:
        return False, None
    value = context[first]
    for part in rest:
        names = _names_in(value)
        if names is None or part not in names:
            return False, None
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return True, value


def _loop_item(name: str, source: str, context: Mapping[str, Any]) -> tuple[bool, Any]:
    """What a loop variable (`earlier` in `{% for earlier in earlier_steps %}`) holds, taken
    from the first item of the list it loops over."""
    loop = re.search(rf"for\s+{re.escape(name)}\s+in\s+(?P<items>[A-Za-z_][\w.]*)", source)
    known, items = _resolve(loop["items"], context) if loop else (False, None)
    if known and isinstance(items, list | tuple) and items:
        return True, items[0]
    return False, None


def undefined(message: str, source: str, line: int | None, context: Mapping[str, Any]) -> str:
    """A name or attribute the template (`source`, failing at `line`) used and the context
    lacks, with the one meant."""
    lines = source.splitlines()
    source_line = lines[line - 1] if line and line <= len(lines) else ""
    allowed = ", ".join(context)
    top = _UNDEFINED.match(message)
    if top:
        name = top.group("name")
        return (
            f"`{name}` is not a name templates know.{did_you_mean(name, list(context))} "
            f"A template may use: {allowed}"
        )
    attribute = _NO_ATTRIBUTE.search(message)
    if not attribute:
        return message
    name = attribute.group("name")
    found = re.search(
        rf"(?P<ns>[A-Za-z_][\w.]*?)\s*(?:\.\s*{re.escape(name)}\b|\[\s*['\"]{re.escape(name)}['\"])",
        source_line,
    )
    namespace = found.group("ns") if found else ""
    known, value = _resolve(namespace, context) if namespace else (False, None)
    if namespace and not known and "." not in namespace:
        known, value = _loop_item(namespace, source, context)
    if known and value is None:
        return (
            f"`{namespace}` is empty in this email (there is no such step at this end of the "
            f"series); print `{namespace}.{name}` inside {{% if {namespace} %}} … {{% endif %}}"
        )
    names = _names_in(value) if known else None
    if names is None:
        what = f"`{namespace}`" if namespace else "the value"
        return f"{what} has no `{name}`"
    meant = closest(name, names)
    hint = f" Did you mean `{namespace}.{meant}`?" if meant else ""
    listing = ", ".join(f"{namespace}.{n}" for n in names)
    extra = " (add new lead fields under personal_fields)" if namespace == "lead" else ""
    return f"`{namespace}.{name}` does not exist.{hint} There are: {listing}{extra}"


def _open_blocks(env: jinja2.Environment, source: str) -> list[tuple[str, int]]:
    """The block tags still open at the end of `source`, innermost last, with their lines."""
    stack: list[tuple[str, int]] = []
    previous = ""
    try:
        for line, kind, value in env.lex(source):
            if kind == "name" and previous == "block_begin":
                if value in _BLOCKS:
                    stack.append((value, line))
                elif value.startswith("end") and stack and stack[-1][0] == value[3:]:
                    stack.pop()
            if kind != "whitespace":
                previous = kind
    except jinja2.TemplateSyntaxError:
        return []
    return stack


def syntax(
    exc: jinja2.TemplateSyntaxError, source: str, env: jinja2.Environment
) -> tuple[int | None, str]:
    """The line to fix and what to do for a template (`source`) Jinja cannot read."""
    message, line = exc.message or "syntax error", exc.lineno
    innermost = _INNERMOST.search(message)
    opened = _open_blocks(env, source)
    where = next((at for tag, at in reversed(opened) if innermost and tag == innermost["tag"]), 0)
    tag = innermost["tag"] if innermost else ""
    opening = f"the `{{% {tag} %}}` on line {where}" if where else f"a `{{% {tag} %}}`"
    if message.startswith("Unexpected end of template") and innermost:
        return where or line, f"{opening} is never closed; add `{{% end{tag} %}}` where it ends"
    unknown = _UNKNOWN_TAG.match(message)
    if unknown and innermost and unknown["tag"].startswith("end") and unknown["tag"] in TAGS:
        closes = unknown["tag"][3:]
        return line, (
            f"`{{% {unknown['tag']} %}}` closes a `{{% {closes} %}}`, but {opening} is still "
            f"open; add `{{% end{tag} %}}` before it"
        )
    if unknown:
        meant = closest(unknown["tag"], TAGS)
        hint = f"; did you mean `{{% {meant} %}}`?" if meant else f"; tags are {', '.join(TAGS)}"
        return line, f"`{{% {unknown['tag']} %}}` is not a Jinja tag{hint}"
    expected = _EXPECTED.match(message)
    if expected and expected["want"].startswith("end of"):
        return line, (
            f"Jinja expected the {expected['want'].removeprefix('end of ')} to end (with `}}}}` "
            f"or `%}}`) but found `{expected['got']}`: a missing operator, `|` or quote?"
        )
    return line, f"Jinja cannot read this line: {message}"
