"""What the control process accepts from a worker: answers as plain data, checked.

A worker may run as nginx.conf's ``user`` and parses every request; the control process
runs as root.  The channel's unpickler already refuses every class but a few
(``nonstop.workers.channel``); this module refuses the rest of what could hurt the
control process through an answer that unpickles: a reply of the wrong shape (which
would leave a call waiting forever), objects shared many times (a 3 KB pickle can name
one list a million times, and adding up counters would double it each time), nesting
too deep to print, exception chains to format, and errors that are not ``Exception``.

``checked`` rebuilds the answer from fresh objects, refusing any list, dict or tuple
met twice (an honest answer shares none), so the result is no larger than the frame it
came in; a budget of characters stops one long string named many times.  What the engine
adds up and the admin API prints is then what a worker could honestly have sent.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from nonstop.servers import ServerReport

__all__ = ["BadReply", "checked"]

MAX_CHARS: Final = 64 * 1024 * 1024  # characters of its strings, each time it names one
MAX_DEPTH: Final = 12

_ATOMS: Final = (type(None), bool, int, float, str)
_REPORT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ServerReport))


class BadReply(ValueError):
    """A worker's answer nonstop never sends: the worker is let go."""


class _Budget:
    __slots__ = ("chars", "seen")

    def __init__(self) -> None:
        self.chars = MAX_CHARS
        self.seen: set[int] = set()  # the ids of the containers met


def checked(message: Any) -> tuple[int, bool, Any]:
    """``(ident, ok, value)`` of a ``("reply", ident, (ok, value))`` message, the value
    rebuilt as plain data (or an ``Exception`` without its chain); ``BadReply`` else."""
    if not (type(message) is tuple and len(message) == 3 and message[0] == "reply"):
        raise BadReply("a message that is not a reply")
    _kind, ident, body = message
    if type(ident) is not int or not (type(body) is tuple and len(body) == 2):
        raise BadReply("a reply of the wrong shape")
    ok, value = body
    if type(ok) is not bool:
        raise BadReply("a reply of the wrong shape")
    budget = _Budget()
    try:
        return ident, ok, _plain(value, budget, 0) if ok else _error(value, budget)
    except BadReply:
        raise
    except Exception as exc:  # a class built without what it holds, a key of a wrong type
        raise BadReply(f"an answer that is not what it says ({type(exc).__name__})") from None


def _plain(value: Any, budget: _Budget, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise BadReply("an answer too deep")
    kind = type(value)
    if kind in _ATOMS:
        if kind is str:
            budget.chars -= len(value)
            if budget.chars < 0:
                raise BadReply("an answer too large")
        return value
    if kind in (list, tuple, dict, ServerReport) and (kind is not tuple or value):
        if id(value) in budget.seen:  # () is one object in CPython, and holds nothing
            raise BadReply("an answer naming one object twice")
        budget.seen.add(id(value))
    if kind is list or kind is tuple:
        return kind(_plain(item, budget, depth + 1) for item in value)
    if kind is dict:
        return {
            _plain(key, budget, depth + 1): _plain(item, budget, depth + 1)
            for key, item in value.items()
        }
    if kind is ServerReport:
        return ServerReport(*(_plain(getattr(value, f), budget, depth + 1) for f in _REPORT_FIELDS))
    raise BadReply(f"an answer holding {kind.__name__}")


def _error(value: Any, budget: _Budget) -> Exception:
    """The worker's error with plain arguments and attributes, and no chain."""
    if not isinstance(value, Exception):
        raise BadReply(f"an error that is {type(value).__name__}")
    value.__context__ = value.__cause__ = value.__traceback__ = None
    value.args = tuple(_plain(arg, budget, 1) for arg in value.args)
    for name, item in list(getattr(value, "__dict__", {}).items()):
        setattr(value, name, _plain(item, budget, 1))
    return value
