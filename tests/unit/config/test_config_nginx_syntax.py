"""The nginx.conf tokenizer and directive tree: quoting, comments, blocks, includes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.config import Config
from nonstop.config.nginxconf import Directive, parse_tree
from nonstop.errors import ConfigError

Write = Callable[[str, str], Path]
Load = Callable[..., Config]


def tree(text: str) -> list[Directive]:
    return parse_tree(text, "/x/nginx.conf", lambda d: [d])


def test_words_semicolons_and_blocks_make_a_tree() -> None:
    [events, http] = tree("events {}\nhttp { server { listen 80; } }\n")
    assert events.name == "events" and events.block == ()
    server = http.block[0] if http.block else None
    assert server is not None and server.block is not None
    assert server.block[0].args == ("80",)
    assert server.block[0].line == 2


def test_double_and_single_quotes_keep_spaces_and_semicolons() -> None:
    [d] = tree("""add_header X "a b; c" 'd e';""")
    assert d.args == ("X", "a b; c", "d e")


def test_backslash_escapes_follow_nginx() -> None:
    [d] = tree(r"""x "say \"hi\"" 'it\'s' a\\b tab\there keep\d;""")
    assert d.args == ('say "hi"', "it's", "a\\b", "tab\there", "keep\\d")


def test_hash_starts_a_comment_only_at_the_start_of_a_word() -> None:
    [d] = tree("x a#b c; # comment ; {\n")
    assert d.args == ("a#b", "c")


def test_empty_quotes_make_an_empty_argument() -> None:
    [d] = tree("map_key '' close;")
    assert d.args == ("", "close")


def test_dollar_brace_does_not_open_a_block() -> None:
    [d] = tree("return 200 ${host}x;")
    assert d.args == ("200", "${host}x")


def test_directive_lines_are_counted_across_comments_and_strings() -> None:
    ds = tree('# one\n\na "two\nthree";\nb;\n')
    assert [(d.name, d.line) for d in ds] == [("a", 3), ("b", 5)]


def test_a_closing_parenthesis_may_follow_a_quoted_word_as_a_word_of_its_own() -> None:
    [d] = tree("if ($request_method = 'OPTIONS') { return 204; }")
    assert d.args == ("($request_method", "=", "OPTIONS", ")")
    assert d.block is not None and d.block[0].args == ("204",)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("events {}\nhttp {\n  listen 80\n", 'unexpected end of file, expecting ";" or "}"', 4),
        ("events {}\nhttp {\n", 'unexpected end of file, expecting "}"', 3),
        ("events {}\n}\n", 'unexpected "}"', 2),
        ("a;\n;\n", 'unexpected ";"', 2),
        ("a b }\n", 'unexpected "}"', 1),
        ('a "b"c;', 'unexpected "c"', 1),
        ("a 'b'(;", 'unexpected "("', 1),
        ('a "unterminated;\n', 'unexpected end of file, expecting ";" or "}"', 2),
    ],
)
def test_syntax_errors_name_the_line(text: str, message: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        tree(text)
    assert info.value.message == message
    assert info.value.where == f"/x/nginx.conf:{line}"


def test_include_expands_in_place_relative_to_the_config_directory(
    write: Write, load_text: Load
) -> None:
    write("conf.d/upstreams.conf", "upstream api { server 127.0.0.1:9000; }\n")
    cfg = load_text(
        """\
        events {}
        http {
          include conf.d/upstreams.conf;
          server { listen 8080; location / { proxy_pass http://api; } }
        }
        """
    )
    assert [u.name for u in cfg.upstreams] == ["api"]
    assert cfg.files[1].endswith("conf.d/upstreams.conf")


def test_glob_include_reads_matching_files_in_sorted_order(write: Write, load_text: Load) -> None:
    write("sites/b.conf", "server { listen 8082; return 200 b; }\n")
    write("sites/a.conf", "server { listen 8081; return 200 a; }\n")
    cfg = load_text("events {}\nhttp { include sites/*.conf; include none/*.conf; }\n")
    assert [s.listens[0].port for s in cfg.servers] == [8081, 8082]
    assert [Path(f).name for f in cfg.files] == ["nginx.conf", "a.conf", "b.conf"]


def test_missing_include_is_an_error_at_the_include_line(load_text: Load) -> None:
    with pytest.raises(ConfigError) as info:
        load_text("events {}\nhttp {\n  include missing.conf;\n}\n")
    assert "missing.conf" in info.value.message
    assert "No such file" in info.value.message
    assert info.value.where.endswith("nginx.conf:3")


def test_error_inside_an_included_file_names_that_file_and_line(
    write: Write, load_text: Load
) -> None:
    inc = write("conf.d/bad.inc", "# first line\nproxy_pass http://127.0.0.1:81;\nfoo bar;\n")
    with pytest.raises(ConfigError) as info:
        load_text(
            """\
            events {}
            http {
              server { listen 80; location / { include conf.d/bad.inc; } }
            }
            """
        )
    assert info.value.message == 'unknown directive "foo"'
    assert info.value.where == f"{inc}:3"


def test_included_file_must_close_its_own_blocks(write: Write, load_text: Load) -> None:
    inc = write("half.conf", "server {\n")
    with pytest.raises(ConfigError) as info:
        load_text("events {}\nhttp { include half.conf; }\n")
    assert info.value.where == f"{inc}:2"


def test_an_include_of_itself_stops_with_an_error(load_text: Load) -> None:
    with pytest.raises(ConfigError, match="too deep"):
        load_text("events {}\ninclude nginx.conf;\n")
