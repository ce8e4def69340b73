"""The resolver's DNS messages: a query as RFC 1035 writes it, and an answer taken only
when it is the answer to that query (its ID, its question, a response)."""

from __future__ import annotations

import socket
import struct

import pytest

from nonstop.proxy.resolver import AAAA, A, parse_response, query


def _answer(
    ident: int, name: str, qtype: int, records: bytes, count: int, flags: int = 0x8180
) -> bytes:
    question = query(name, qtype, ident)[12:]
    return struct.pack("!HHHHHH", ident, flags, 1, count, 0, 0) + question + records


def _record(rtype: int, rdata: bytes, ttl: int = 60, owner: bytes = b"\xc0\x0c") -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def test_a_query_asks_one_question_with_recursion_desired() -> None:
    data = query("App.Test.", A, 0x1234)
    assert data[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert data[12:] == b"\x03App\x04Test\x00\x00\x01\x00\x01"


def test_an_answer_gives_its_addresses_and_ttls() -> None:
    records = _record(A, socket.inet_aton("10.0.0.1"), 30) + _record(
        A, socket.inet_aton("10.0.0.2")
    )
    assert parse_response(_answer(7, "app.test", A, records, 2), 7, "app.test", A) == (
        0,
        [("10.0.0.1", 30), ("10.0.0.2", 60)],
    )


def test_a_cname_chain_is_followed_to_its_addresses() -> None:
    target = b"\x04real\x04test\x00"
    cname = _record(5, target)
    # the A record's owner: the CNAME's target, as a pointer to where it was written
    pointer = struct.pack("!H", 0xC000 | (12 + len(b"\x03app\x04test\x00") + 4 + 12))
    address = _record(AAAA, socket.inet_pton(socket.AF_INET6, "::1"), owner=pointer)
    data = _answer(9, "app.test", AAAA, cname + address, 2)
    assert parse_response(data, 9, "app.test", AAAA) == (0, [("::1", 60)])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_answer(8, "app.test", A, b"", 0), "another ID"),
        (_answer(7, "other.test", A, b"", 0), "another question"),
        (_answer(7, "app.test", AAAA, b"", 0), "another type"),
        (_answer(7, "app.test", A, b"", 0, flags=0x0100), "a query, not a response"),
        (b"\x00\x07", "too short"),
    ],
)
def test_what_is_not_the_answer_to_the_query_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ValueError):
        parse_response(data, 7, "app.test", A)


def test_records_of_other_owners_are_not_taken() -> None:
    stranger = _record(A, socket.inet_aton("6.6.6.6"), owner=b"\x05other\x04test\x00")
    assert parse_response(_answer(7, "app.test", A, stranger, 1), 7, "app.test", A) == (0, [])
