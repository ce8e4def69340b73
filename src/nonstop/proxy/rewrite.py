"""The rewrite module at run time: set, rewrite, return, if and break, in order.

Compiled once per config from the model's steps (``compile_steps``); ``run`` executes a
level's program on a request the way ngx_http_script_run does: a true ``if`` switches the
request to the block's configuration and runs its directives inline, then the level's
program continues; ``return``, ``break`` and the flags of ``rewrite`` end it.  What a
program did is left on the request (``Request.route``, ``path``, ``args``, ``captures``,
``ret_code``, ``uri_changed``) for the router's location loop
(``ServerRoutes.dispatch``).  Semantics: src/http/modules/ngx_http_rewrite_module.c and
src/http/ngx_http_script.c.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from nonstop.config.model import (
    BreakSpec,
    Condition,
    IfSpec,
    ReturnSpec,
    RewriteSpec,
    SetSpec,
    Step,
)
from nonstop.config.rewrite import compile_regex
from nonstop.proxy.request import Request
from nonstop.proxy.variables import Getter, VariableTable, set_captures

__all__ = [
    "ANSWER",
    "LAST",
    "NEXT",
    "STOP",
    "Op",
    "compile_steps",
    "new_target",
    "run",
]

# what a program ended with
NEXT = 0  # it ran to its end
STOP = 1  # "break", or "rewrite ... break": stay in this location
LAST = 2  # "rewrite ... last": search the locations again
ANSWER = 3  # "return", or a rewrite that redirects: Request.ret_code is set

_SET, _RETURN, _BREAK, _REWRITE, _IF = range(5)
_REDIRECT_PREFIXES = ("http://", "https://", "$scheme")


class Op:
    """One compiled step."""

    __slots__ = (
        "add_args",
        "code",
        "cond",
        "kind",
        "name",
        "negate",
        "operand",
        "regex",
        "route",
        "steps",
        "value",
    )

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.name = ""
        self.value: Getter | None = None
        self.code = 0
        self.regex: re.Pattern[str] | None = None
        self.add_args = True
        self.cond = ""
        self.negate = False
        self.operand: Getter | None = None
        self.steps: tuple[Op, ...] = ()
        self.route: Any = None  # the Route of a location "if", set by the router


def compile_steps(
    steps: tuple[Step, ...], table: VariableTable, where: str, route_of: Any = None
) -> tuple[Op, ...]:
    """``route_of(if_spec)`` gives the Route of a location ``if``'s configuration."""
    return tuple(_compile(step, table, where, route_of) for step in steps)


def _compile(step: Step, table: VariableTable, where: str, route_of: Any) -> Op:
    if isinstance(step, SetSpec):
        op = Op(_SET)
        op.name = step.name
        op.value = table.compile(step.value, where)
    elif isinstance(step, ReturnSpec):
        op = Op(_RETURN)
        op.code = step.code
        op.value = table.compile(step.text, where) if step.text is not None else None
    elif isinstance(step, BreakSpec):
        op = Op(_BREAK)
    elif isinstance(step, RewriteSpec):
        op = _compile_rewrite(step, table, where)
    else:
        op = _compile_if(step, table, where, route_of)
    return op


def _compile_rewrite(step: RewriteSpec, table: VariableTable, where: str) -> Op:
    op = Op(_REWRITE)
    op.regex = compile_regex(step.regex)
    raw = step.replacement
    # a replacement ending in "?" drops the request's arguments (ngx_http_rewrite)
    op.add_args = not raw.raw.endswith("?")
    redirect = raw.raw.startswith(_REDIRECT_PREFIXES)
    op.code = {"permanent": 301, "redirect": 302}.get(step.flag, 302 if redirect else 0)
    op.cond = step.flag
    op.value = table.compile(raw, where)
    return op


def _compile_if(step: IfSpec, table: VariableTable, where: str, route_of: Any) -> Op:
    op = Op(_IF)
    cond: Condition = step.condition
    op.cond = cond.op.lstrip("!")
    op.negate = cond.op.startswith("!")
    op.value = table.compile(cond.subject, where)
    if cond.operand is not None:
        op.operand = table.compile(cond.operand, where)
    if cond.regex is not None:
        op.regex = compile_regex(cond.regex)
    op.steps = compile_steps(step.steps, table, where, route_of)
    if step.location is not None and route_of is not None:
        op.route = route_of(step)
    return op


# --------------------------------------------------------------------------- running


def run(ops: tuple[Op, ...], req: Request) -> int:
    for op in ops:
        kind = op.kind
        if kind == _SET:
            assert op.value is not None
            if req.vars is None:
                req.vars = {}
            req.vars[op.name] = op.value(req)
        elif kind == _RETURN:
            req.ret_code = op.code
            req.ret_text = op.value(req) if op.value is not None else None
            return ANSWER
        elif kind == _BREAK:
            req.uri_changed = False
            return STOP
        elif kind == _REWRITE:
            done = _rewrite(op, req)
            if done != NEXT:
                return done
        elif _test(op, req):
            if op.route is not None:
                req.route = op.route
            done = run(op.steps, req)
            if done != NEXT:
                return done
    return NEXT


def _rewrite(op: Op, req: Request) -> int:
    assert op.regex is not None and op.value is not None
    found = op.regex.search(req.path)
    if found is None:
        return NEXT
    set_captures(req, found)
    target = op.value(req)
    if not op.add_args and target.endswith("?"):
        target = target[:-1]
    if op.code:
        if op.add_args and req.args:
            target += ("&" if "?" in target else "?") + req.args
        req.ret_code = op.code
        req.ret_text = target
        return ANSWER
    req.path, req.args = new_target(target, req.args, op.add_args)
    req.rewritten = True
    if op.cond == "break":
        req.uri_changed = False
        req.valid_location = False
        return STOP
    req.uri_changed = True
    return LAST if op.cond == "last" else NEXT


def new_target(target: str, args: str, add_args: bool) -> tuple[str, str]:
    """The $uri and $args after a rewrite to ``target``: arguments in the replacement come
    first and the request's follow them, unless the replacement ended in "?"."""
    path, sep, new_args = target.partition("?")
    if sep:
        if add_args and args:
            new_args += "&" + args
        return path, new_args
    return path, args if add_args else ""


def _test(op: Op, req: Request) -> bool:
    assert op.value is not None
    value = op.value(req)
    cond = op.cond
    if cond == "":
        result = value not in ("", "0")
    elif cond == "=":
        assert op.operand is not None
        result = value == op.operand(req)
    elif cond in ("~", "~*"):
        assert op.regex is not None
        found = op.regex.search(value)
        result = found is not None
        if found is not None and not op.negate:
            set_captures(req, found)
    else:
        result = _file_test(cond, value)
    return result != op.negate


def _file_test(cond: str, path: str) -> bool:
    """-f, -d, -e, -x as ngx_http_script_file_code checks them (through symlinks)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    if cond == "-f":
        return stat.S_ISREG(info.st_mode)
    if cond == "-d":
        return stat.S_ISDIR(info.st_mode)
    if cond == "-x":
        return os.access(path, os.X_OK)
    return True
