"""The argument checks of every tool, and their wording: one voice to the agent.

Why one module: an agent that meets ``"resolutoin" is not an argument...`` from one tool and
``unknown argument`` or ``'5' is not a int`` from another learns four dialects. Every tool's
raw argument object goes through :class:`ToolArguments` (simple tools) or
:func:`wan_mcp.core.request.parse_video_request` (``generate_video``), and both build their
problems with the functions here, so a misspelt name, a wrong JSON type and a value out of
range read the same everywhere, name the field and the allowed values, and say what to do.

Hosts add arguments of their own to every call; :data:`HOST_INJECTED` names the ones we know
(with the reason beside each) and they are dropped before any check. Anything else unknown is
still refused: a typo must never be silently ignored.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, NoReturn

from wan_mcp.errors import ErrorCode, WanError

__all__ = [
    "HOST_INJECTED",
    "JsonKind",
    "Problem",
    "ToolArguments",
    "json_kind",
    "raise_problems",
    "show",
    "unknown_argument",
    "without_host_arguments",
    "wrong_type",
]

log = logging.getLogger("wan_mcp.arguments")

#: Arguments that hosts inject into every tool call, dropped before validation.
HOST_INJECTED: Final[Mapping[str, str]] = {
    # Gemini CLI 0.61 adds this scheduling flag to every tool's schema and forwards it with the
    # call; refusing it made every first call fail.
    "wait_for_previous": "Gemini CLI 0.61 adds it to every tool call",
}

JsonKind = Literal["string", "integer", "number", "boolean", "array", "object"]

_EXPECTED: Final[Mapping[str, str]] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array of strings",
    "object": "an object",
}
_FIX: Final[Mapping[str, str]] = {
    "string": "send a string",
    "integer": "send a JSON number without quotes, e.g. {example}",
    "number": "send a JSON number without quotes, e.g. {example}",
    "boolean": "send JSON true or false without quotes",
    "array": 'send a JSON array of strings, e.g. ["https://example.com/ref.mp4"]',
    "object": 'send a JSON object, e.g. {"key": "value"}',
}


class Problem(Exception):
    """One thing wrong with the arguments, already worded for the agent."""

    def __init__(self, fld: str, message: str, hint: str, allowed: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.field = fld
        self.message = message
        self.hint = hint
        self.allowed = tuple(allowed) if allowed else None

    def error(self) -> WanError:
        return WanError(
            ErrorCode.INVALID_REQUEST,
            self.message,
            field=self.field,
            allowed=list(self.allowed) if self.allowed else None,
            hint=self.hint,
        )


def show(value: object, limit: int = 40) -> str:
    """The value as the agent wrote it (JSON spelling), cut short so huge inputs stay readable."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_kind(value: object) -> str:
    """The JSON name of a value's type (never a Python type name)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "value"


def unknown_argument(
    tool: str, name: object, known: Sequence[str], aliases: Mapping[str, str] | None = None
) -> Problem:
    """An argument the tool does not have: named, with the likely intended one and the full list."""
    text = str(name)
    guess = (aliases or {}).get(text.lower()) or next(iter(difflib.get_close_matches(text, list(known), n=1)), None)
    hint = f"remove it (did you mean '{guess}'?)" if guess else "remove it; only the allowed arguments are accepted"
    return Problem(text, f"{show(text, 60)} is not an argument of {tool}", hint, tuple(known))


def wrong_type(
    name: str, expected: JsonKind, value: object, *, example: str = "5", allowed: Sequence[str] | None = None
) -> Problem:
    """A value of the wrong JSON type."""
    return Problem(
        name,
        f"expected {_EXPECTED[expected]}, got {json_kind(value)} {show(value)}",
        _FIX[expected].format(example=example),
        allowed,
    )


def raise_problems(problems: Sequence[Problem], order: Mapping[str, int] | None = None) -> NoReturn:
    """Raise one ``WanError`` for all problems: the first leads, the rest ride along.

    An agent that hears about every wrong field at once fixes them in one retry instead of
    one retry per field. ``order`` ranks fields (argument order); unranked ones come first.
    """
    by_field: dict[str, Problem] = {}
    for problem in problems:
        by_field.setdefault(problem.field, problem)  # the first problem per field: type before routing
    ranks = order or {}
    ordered = sorted(by_field.values(), key=lambda p: ranks.get(p.field, -1))
    first, rest = ordered[0], ordered[1:]
    message, hint = first.message, first.hint
    if rest:
        parts = []
        for p in rest:
            allowed = f"; allowed: {', '.join(p.allowed)}" if p.allowed and len(p.allowed) <= 6 else ""
            parts.append(f"field '{p.field}': {p.message.rstrip('.')}{allowed}; next: {p.hint.rstrip('.')}")
        message += " (also wrong: " + " | ".join(parts) + ")"
        hint += f"; fix all {len(ordered)} fields in one call"
    raise Problem(first.field, message, hint, first.allowed).error()


def not_an_object(tool: str, args: object) -> WanError:
    return Problem(
        "arguments",
        f"the arguments of {tool} must be a JSON object, got {json_kind(args)}",
        'send the arguments as an object, e.g. {"task_id": "..."}',
    ).error()


def without_host_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``args`` without the arguments hosts inject on their own (:data:`HOST_INJECTED`)."""
    dropped = [name for name in args if name in HOST_INJECTED]
    if dropped:
        log.debug("ignoring host-injected argument(s) %s", ", ".join(dropped))
    return {k: v for k, v in args.items() if k not in HOST_INJECTED}


class ToolArguments:
    """Reads one tool's raw argument object: typed ``take()``s, then ``finish()`` refuses the rest.

    Problems are collected, not raised one by one, so ``finish()`` reports every wrong field in
    one message. ``null`` means "not given" (many clients fill unused optional arguments).
    """

    def __init__(self, tool: str, args: object, known: Sequence[str]) -> None:
        if not isinstance(args, Mapping):
            raise not_an_object(tool, args)
        self.tool = tool
        self.known = tuple(known)
        self._args = without_host_arguments(args)
        self._problems: list[Problem] = []

    def take(self, name: str, kind: JsonKind, default: Any = None, *, example: str = "5") -> Any:
        assert name in self.known, f"{name} is not declared for {self.tool}"
        value = self._args.pop(name, None)
        if value is None:
            return default
        matches = {
            "string": isinstance(value, str),
            "integer": (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, float) and value.is_integer()),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
            "object": isinstance(value, Mapping),
        }[kind]
        if not matches:
            self._problems.append(wrong_type(name, kind, value, example=example))
            return default
        return int(value) if kind == "integer" else value

    def rest(self) -> dict[str, Any]:
        """What no ``take()`` consumed (for a tool that hands the remainder to its own parser)."""
        return dict(self._args)

    def add(self, problem: Problem) -> None:
        self._problems.append(problem)

    def finish(self, *, rest_is_checked: bool = False) -> None:
        """Raise every problem found so far, plus one for each argument the tool does not have."""
        if not rest_is_checked:
            self._problems.extend(unknown_argument(self.tool, name, self.known) for name in self._args)
        if self._problems:
            raise_problems(self._problems, {name: i for i, name in enumerate(self.known)})
