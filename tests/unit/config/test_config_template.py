from __future__ import annotations

import pytest

from nonstop.config import compile_template


def test_plain_text_is_one_literal_part() -> None:
    t = compile_template("max-age=31536000")
    assert t.parts == (("lit", "max-age=31536000"),)
    assert t.is_constant


def test_variables_split_text_into_literal_and_variable_parts() -> None:
    t = compile_template("https://$host$request_uri")
    assert t.parts == (("lit", "https://"), ("var", "host"), ("var", "request_uri"))
    assert t.variables == ("host", "request_uri")
    assert not t.is_constant


def test_braces_delimit_a_name_followed_by_name_characters() -> None:
    t = compile_template("${host}_suffix")
    assert t.parts == (("var", "host"), ("lit", "_suffix"))


def test_a_name_ends_at_the_first_character_outside_the_name_set() -> None:
    t = compile_template("$http_x_real_ip:$server_port/")
    assert t.parts == (
        ("var", "http_x_real_ip"),
        ("lit", ":"),
        ("var", "server_port"),
        ("lit", "/"),
    )


def test_raw_text_is_kept() -> None:
    assert compile_template("a $b").raw == "a $b"


def test_empty_template_has_no_parts() -> None:
    assert compile_template("").parts == ()


@pytest.mark.parametrize("raw", ["cost: $", "$ x", "${}", "${a-b}"])
def test_dollar_without_a_name_is_an_error(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid variable name"):
        compile_template(raw)


def test_unclosed_brace_is_an_error() -> None:
    with pytest.raises(ValueError, match="closing bracket"):
        compile_template("${host")
