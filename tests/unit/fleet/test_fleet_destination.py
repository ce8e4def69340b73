"""SSH destinations as written in [fleet] and remote command lines built from argv."""

from __future__ import annotations

import shlex

import pytest

from nonstop.fleet.ssh import Destination, remote_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploy@app1:22", Destination("app1", 22, "deploy")),
        ("deploy@app1", Destination("app1", 22, "deploy")),
        ("app1:2222", Destination("app1", 2222, None)),
        ("10.0.0.5", Destination("10.0.0.5", 22, None)),
        ("root@[2001:db8::1]:2200", Destination("2001:db8::1", 2200, "root")),
    ],
)
def test_destinations_parse(text: str, expected: Destination) -> None:
    assert Destination.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "deploy@", "@app1", "app1:", "app1:0", "app1:70000", "a b", "app1:22:22"]
)
def test_malformed_destinations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Destination.parse(text)


def test_a_destination_prints_as_it_is_written() -> None:
    assert str(Destination.parse("deploy@app1:22")) == "deploy@app1:22"
    assert str(Destination.parse("[::1]:22")) == "[::1]:22"


def test_every_argument_of_a_remote_command_is_quoted() -> None:
    argv = ["printf", "%s", "$(id)", "a b", "'", ";"]
    assert shlex.split(remote_command(argv)) == argv


@pytest.mark.parametrize("bad", ["ls -la", [], ()])
def test_a_remote_command_must_be_a_non_empty_argument_list(bad: object) -> None:
    with pytest.raises(TypeError):
        remote_command(bad)  # type: ignore[arg-type]
