"""The one vocabulary: what validation accepts, the data plane evaluates, and the reverse."""

from __future__ import annotations

from nonstop.config import compile_template
from nonstop.config.vocabulary import METHODS, VARIABLES, is_known_variable
from nonstop.proxy.balancers import BALANCERS
from nonstop.proxy.request import Request
from nonstop.proxy.variables import BUILTINS, VariableTable


class _Transport:
    def get_extra_info(self, name: str) -> object:
        return {"peername": ("192.0.2.7", 50123), "sockname": ("198.51.100.1", 8080)}.get(name)


class _Conn:
    remote_addr = "192.0.2.7"
    remote_bytes = b"\xc0\x00\x02\x07"
    scheme = "http"
    local_port = 8080
    transport = _Transport()


def _request() -> Request:
    req = Request(_Conn(), b"/a/b?x=1")
    req.method = b"GET"
    req.path = "/a/b"
    req.args = "x=1"
    req.headers = [(b"cookie", b"Cookie", b"s=2"), (b"user-agent", b"User-Agent", b"t")]
    return req


def test_every_variable_validation_accepts_has_a_getter_and_no_getter_is_unlisted() -> None:
    assert set(VARIABLES) == set(BUILTINS)


def test_every_listed_variable_compiles_and_evaluates_to_text() -> None:
    table = VariableTable()
    req = _request()
    for name in VARIABLES:
        assert isinstance(table.compile(compile_template(f"${name}"))(req), str), name


def test_the_prefix_families_are_known_and_evaluate() -> None:
    table = VariableTable()
    req = _request()
    for name, value in (("arg_x", "1"), ("cookie_s", "2"), ("http_user_agent", "t")):
        assert is_known_variable(name)
        assert table.compile(compile_template(f"${name}"))(req) == value
    assert not is_known_variable("http_")  # a prefix alone names nothing


def test_remote_port_and_server_addr_come_from_the_connection() -> None:
    table = VariableTable()
    req = _request()
    assert table.compile(compile_template("$remote_port"))(req) == "50123"
    assert table.compile(compile_template("$server_addr:$server_port"))(req) == "198.51.100.1:8080"


def test_every_balancing_method_has_a_balancer_and_every_balancer_a_name() -> None:
    assert set(METHODS) == set(BALANCERS)


def test_the_configuration_guide_lists_exactly_the_vocabulary() -> None:
    import re
    from pathlib import Path

    guide = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    section = guide.split("The variables nonstop knows", 1)[1].split("families", 1)[0]
    assert set(re.findall(r"\$([a-z_]+)\b", section)) == set(VARIABLES)
