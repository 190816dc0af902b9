"""Jinja's sandbox with limits: a template is code a marketer edits, and a loop inside a loop,
a macro calling itself or a string doubled in a loop must end as a clear error naming the
template and line, not as hours of work or an exhausted memory that stalls every send."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

MAX_TEMPLATE_VALUE = 100_000  # characters or items one template expression may build


@dataclass(frozen=True)
class TemplateLimits:
    """What one rendering of a template may do. A template is code a marketer edits: nested
    loops, a macro calling itself twice or a string doubled in a loop would otherwise run for
    hours or exhaust the memory, stalling every send and hanging `schedule check`. The
    shipped steps use a few dozen operations, a few kB of text and a few milliseconds."""

    operations: int = 100_000  # loop iterations and calls, all of a rendering's together
    output: int = 1_000_000  # characters printed or captured (`{% set %}`, macros)
    seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic  # injected by tests


class TemplateLimit(SecurityError):
    """A template went past one of its `TemplateLimits`; raised inside the template's own
    frames, so the error names the file and line that did it."""


class _Budget:
    """What one rendering has used so far of its limits."""

    def __init__(self, limits: TemplateLimits):
        self.limits = limits
        self.operations = 0
        self.output = 0
        self.deadline = limits.clock() + limits.seconds

    def tick(self) -> None:
        """One loop iteration or call; also where the time is checked, as nothing slow can
        happen in a template without looping or calling."""
        self.operations += 1
        if self.operations > self.limits.operations:
            raise TemplateLimit(
                f"the template ran more than {self.limits.operations} loop iterations and "
                "calls (nested loops, or a macro calling itself?)"
            )
        if self.limits.clock() > self.deadline:
            raise TemplateLimit(f"the template took more than {self.limits.seconds:g} seconds")

    def emit(self, size: int) -> None:
        self.output += size
        if self.output > self.limits.output:
            raise TemplateLimit(_too_much_output(self.limits))


def _too_much_output(limits: TemplateLimits) -> str:
    return f"the template built more than {limits.output} characters of text"


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def limited(limits: TemplateLimits) -> Iterator[None]:
    """A fresh budget for one rendering (this thread's; other renderings keep theirs)."""
    token = _BUDGET.set(_Budget(limits))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _budget() -> _Budget:
    """The rendering's budget; a template rendered outside `limited` gets the defaults."""
    budget = _BUDGET.get()
    return budget if budget is not None else _Budget(TemplateLimits())


def _check_size(value: object) -> None:
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_TEMPLATE_VALUE:
        raise TemplateLimit(
            f"an expression built more than {MAX_TEMPLATE_VALUE} characters or items"
        )


@jinja2.pass_context  # also keeps Jinja from running it at compile time
def _counted(_context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `{% for %}` loops over: each iteration is charged to the rendering."""
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


@jinja2.pass_context
def _bounded(_context: Context, value: Any) -> Any:
    """What every filter and `~` returns, checked: `x|replace('x', 'xxxx')` or `s ~ s` in a
    loop would grow without end."""
    _check_size(value)
    return value


def _measured(value: Any) -> Any:
    """Every `{{ ... }}` printed, charged before it joins a buffer (a `{% set %}` block
    would otherwise collect gigabytes before anything is checked)."""
    budget = _BUDGET.get()
    if budget is not None and not isinstance(value, jinja2.Undefined):
        budget.emit(len(value) if isinstance(value, str) else len(str(value)))
    return value


def _bounded_concat(parts: Iterable[str]) -> str:
    """How Jinja joins captured text (`{% set %}` blocks, macros, `caller()`), bounded."""
    limits = _budget().limits
    pieces, size = [], 0
    for piece in parts:
        size += len(piece)
        if size > limits.output:
            raise TemplateLimit(_too_much_output(limits))
        pieces.append(piece)
    return "".join(pieces)


class _Charge(NodeTransformer):
    """Rewrites a parsed template so loops are counted and filter and `~` results checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop = self.generic_visit(node)
        assert isinstance(loop, nodes.For)
        loop.iter = _apply("_counted", loop.iter)
        return loop

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        filtered = self.generic_visit(node)
        assert isinstance(filtered, nodes.Filter)
        if filtered.node is None:  # the filter of a `{% filter %}` block: no value to check
            return filtered
        return _apply("_bounded", filtered)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        joined = self.generic_visit(node)
        assert isinstance(joined, nodes.Concat)
        return _apply("_bounded", joined)


def _apply(name: str, node: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


_PADDING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _bounded_range(*args: int) -> range:
    """The sandbox's `range`, refusing a huge one as a template error instead of crashing."""
    try:
        return safe_range(*args)
    except OverflowError as exc:
        raise SecurityError(str(exc)) from None


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, which also bounds what a template may do (`TemplateLimits`): `*`, `+`
    and `**` may not build huge values (`{{ 'x' * 10**10 }}` would exhaust the memory and
    `{{ 9**9**9 }}` never finish), loops and calls are counted, text is measured."""

    intercepted_binops = frozenset({"*", "**", "+"})
    concat = staticmethod(_bounded_concat)

    def __init__(self, **options: Any):
        super().__init__(finalize=_measured, **options)
        self.globals["range"] = _bounded_range
        self.filters["_counted"] = _counted
        self.filters["_bounded"] = _bounded

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        charged = _Charge().visit(tree)
        assert isinstance(charged, nodes.Template)
        return charged

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        if (
            isinstance(getattr(obj, "__self__", None), str)
            and obj.__name__ in _PADDING
            and any(isinstance(arg, int) and arg > MAX_TEMPLATE_VALUE for arg in args)
        ):
            raise TemplateLimit(
                f"{obj.__name__}() would build more than {MAX_TEMPLATE_VALUE} characters or items"
            )
        result = super().call(context, obj, *args, **kwargs)
        if not isinstance(result, Markup):  # a macro's text is bounded as it is captured
            _check_size(result)
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for items, times in ((left, right), (right, left)):
                if (
                    isinstance(items, str | list | tuple)
                    and isinstance(times, int)
                    and len(items) * times > MAX_TEMPLATE_VALUE
                ):
                    raise SecurityError(f"'*' would build more than {MAX_TEMPLATE_VALUE} items")
        elif operator == "+":
            if (
                isinstance(left, str | list | tuple)
                and isinstance(right, str | list | tuple)
                and len(left) + len(right) > MAX_TEMPLATE_VALUE
            ):
                raise TemplateLimit(
                    f"'+' would build more than {MAX_TEMPLATE_VALUE} characters or items"
                )
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * abs(left).bit_length() > 10_000
        ):  # Python prints up to 4300 digits
            raise SecurityError("'**' would build a number too large to print")
        return super().call_binop(context, operator, left, right)


def stream(template: jinja2.Template, context: dict[str, Any], limits: TemplateLimits) -> str:
    """The template's text, stopped once it passes the limit: the error is thrown into the
    template where it stands, so it names the line that was printing."""
    parts: list[str] = []
    size = 0
    stream = cast(Generator[str, None, None], template.generate(context))
    for part in stream:
        size += len(part)
        if size > limits.output:
            stream.throw(TemplateLimit(_too_much_output(limits)))
        parts.append(part)
    return "".join(parts)


_REFERENCES = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)


def include_loop(env: jinja2.Environment, name: str) -> tuple[list[str], int] | None:
    """The chain of templates by which `name` includes, extends or imports itself, and the
    line in `name` where the chain starts; None when there is no such loop.

    Found by reading the templates, before any rendering: rendered, a loop is stopped only
    by the output or recursion limits, which name neither the loop nor its line. A template
    that is missing or does not parse is left to the rendering, which says so.
    """

    def references(template: str) -> list[tuple[str, int]]:
        assert env.loader is not None
        try:
            source = env.loader.get_source(env, template)[0]
            tree = env.parse(source)
        except jinja2.TemplateError:
            return []
        found = []
        for node in tree.find_all(_REFERENCES):
            target = getattr(node, "template", None)  # a name computed at run time is skipped
            if isinstance(target, nodes.Const) and isinstance(target.value, str):
                found.append((target.value, node.lineno))
        return found

    def walk(template: str, chain: list[str]) -> list[str] | None:
        for target, _line in references(template):
            if target == name:
                return [*chain, target]
            if target not in chain:
                found = walk(target, [*chain, target])
                if found:
                    return found
        return None

    for target, line in references(name):
        chain = [name, target] if target == name else walk(target, [name, target])
        if chain:
            return chain, line
    return None
