"""The rewrite module's directives seen from the config side: regexes and variable names.

nginx compiles its regexes with PCRE; Python's ``re`` reads the patterns real configs use
the same way, once PCRE's spelling of named groups, ``(?<name>...)`` and ``(?'name'...)``,
is given Python's ``(?P<name>...)``.  A named group defines a variable of that name
(ngx_http_regex_compile), and ``$1``..``$9`` are the numbered captures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nonstop.config.model import Config, IfSpec, LocationSpec, Regex, SetSpec, Step

__all__ = ["CAPTURES", "compile_regex", "defined_names", "walk_steps"]

CAPTURES = frozenset("123456789")
"""``$1``..``$9``: the captures of the last regex that matched."""

_NAMED = re.compile(r"\(\?(?:<([A-Za-z_][A-Za-z0-9_]*)>|'([A-Za-z_][A-Za-z0-9_]*)')")


def compile_regex(regex: Regex) -> re.Pattern[str]:
    """Compile ``regex``; raises ValueError with nginx's wording when it is not valid."""
    pattern = _NAMED.sub(lambda m: f"(?P<{m.group(1) or m.group(2)}>", regex.pattern)
    try:
        return re.compile(pattern, re.IGNORECASE if regex.caseless else 0)
    except re.error as exc:
        raise ValueError(f'pcre_compile() failed: {exc} in "{regex.pattern}"') from exc


def walk_steps(steps: tuple[Step, ...]) -> Iterator[Step]:
    """Every step, the steps inside each ``if`` included."""
    for step in steps:
        yield step
        if isinstance(step, IfSpec):
            yield from walk_steps(step.steps)


def _regexes(steps: tuple[Step, ...]) -> Iterator[Regex]:
    for step in walk_steps(steps):
        regex = getattr(step, "regex", None)
        if isinstance(regex, Regex):
            yield regex
        if isinstance(step, IfSpec) and step.condition.regex is not None:
            yield step.condition.regex


def _location_regexes(loc: LocationSpec) -> Iterator[Regex]:
    if loc.is_regex:
        yield Regex(loc.path, loc.modifier == "~*")
    yield from _regexes(loc.steps)
    for rule in (*loc.redirects, *loc.cookie_paths, *loc.cookie_domains):
        if rule.regex is not None:
            yield rule.regex  # proxy_redirect and proxy_cookie_* captures


def defined_names(config: Config) -> set[str]:
    """The variables a config defines: ``set`` at any level, ``map`` targets and the
    named groups of every regex."""
    names = {m.target for m in config.maps}
    regexes: list[Regex] = [regex for m in config.maps for regex, _ in m.regexes]
    for server in config.servers:
        names.update(name for name, _ in server.sets)
        regexes.extend(_regexes(server.steps))
        steps: list[Step] = list(walk_steps(server.steps))
        for loc in server.locations:
            names.update(name for name, _ in loc.sets)
            regexes.extend(_location_regexes(loc))
            steps.extend(walk_steps(loc.steps))
        names.update(step.name for step in steps if isinstance(step, SetSpec))
    for regex in regexes:
        names.update(compile_regex(regex).groupindex)
    return names
