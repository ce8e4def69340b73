"""Balancing, failover and retries on real sockets, in nginx's order."""

from __future__ import annotations

from tests.integration.test_proxy_http import conf
from tests.support.backends import free_port


def names(p, count: int, method: str = "GET", path: str = "/", source: str | None = None):
    return [p.request(method, path, source=source)[2].decode() for _ in range(count)]


def test_weighted_round_robin_sends_requests_in_nginx_smooth_order(backends, proxy):
    a, b, c = backends(3)
    p = proxy(conf(f"server {a.address} weight=5; server {b.address}; server {c.address};"))
    assert names(p, 14) == ["b1", "b1", "b2", "b1", "b3", "b1", "b1"] * 2


def test_refused_server_is_skipped_and_marked_failed_for_fail_timeout(backends, proxy):
    (b1,) = backends(1)
    dead = free_port()
    p = proxy(conf(f"server 127.0.0.1:{dead}; server {b1.address};"))
    assert names(p, 6) == ["b1"] * 6
    # The dead server was tried once, then left alone for fail_timeout (10s).
    assert len(b1.received) == 6


def test_get_is_retried_on_next_server_when_first_closes_without_answer(backends, proxy):
    a, b = backends(2)
    a.fail_mode = "close"
    p = proxy(conf(f"server {a.address}; server {b.address};"))
    status, _, body = p.request("GET", "/")
    assert (status, body) == (200, b"b2")
    assert len(a.received) == 1


def test_post_is_not_retried_after_it_was_sent(backends, proxy):
    a, b = backends(2)
    a.fail_mode = "close"
    p = proxy(conf(f"server {a.address}; server {b.address};"))
    status, _, _ = p.request("POST", "/", body=b"data")
    assert status == 502
    assert len(a.received) == 1
    assert b.received == []


def test_post_is_retried_when_non_idempotent_is_listed(backends, proxy):
    a, b = backends(2)
    a.fail_mode = "close"
    p = proxy(
        conf(
            f"server {a.address}; server {b.address};",
            "proxy_next_upstream error timeout non_idempotent;",
        )
    )
    status, _, body = p.request("POST", "/echo", body=b"data")
    assert status == 200
    assert b'"body": "data"' in body


def test_post_is_retried_when_the_connection_was_refused(backends, proxy):
    (b1,) = backends(1)
    dead = free_port()
    p = proxy(conf(f"server 127.0.0.1:{dead}; server {b1.address};"))
    status, _, body = p.request("POST", "/", body=b"x")
    assert (status, body) == (200, b"b1")


def test_no_live_upstreams_gives_502(proxy):
    p = proxy(conf(f"server 127.0.0.1:{free_port()}; server 127.0.0.1:{free_port()};"))
    assert p.request("GET", "/")[0] == 502
    assert p.request("GET", "/")[0] == 502


def test_upstream_read_timeout_gives_504(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(f"server {b1.address};", "proxy_read_timeout 1s;"))
    status, _, _ = p.request("GET", "/sleep/3")
    assert status == 504


def test_status_retry_passes_the_last_upstream_answer_through(backends, proxy):
    a, b = backends(2)
    a.fail_mode = "status/503"
    b.fail_mode = "status/503"
    p = proxy(
        conf(f"server {a.address}; server {b.address};", "proxy_next_upstream error http_503;")
    )
    assert p.request("GET", "/")[0] == 503
    assert len(a.received) + len(b.received) == 2


def test_http_502_retry_moves_to_the_next_server(backends, proxy):
    a, b = backends(2)
    a.fail_mode = "status/502"
    p = proxy(
        conf(f"server {a.address}; server {b.address};", "proxy_next_upstream error http_502;")
    )
    assert p.request("GET", "/")[2] == b"b2"


def test_backup_serves_only_when_primaries_are_down(backends, proxy):
    a, b = backends(2)
    dead = free_port()
    p = proxy(conf(f"server 127.0.0.1:{dead}; server {b.address} backup;"))
    assert names(p, 3) == ["b2"] * 3
    p2 = proxy(conf(f"server {a.address}; server {b.address} backup;"))
    assert names(p2, 3) == ["b1"] * 3


def test_ip_hash_keeps_a_slash24_on_one_server(backends, proxy):
    backends_ = backends(3)
    p = proxy(conf("ip_hash;\n" + "\n".join(f"server {b.address};" for b in backends_)))
    first = names(p, 1, source="127.0.1.10")[0]
    assert names(p, 3, source="127.0.1.77") == [first] * 3
    seen = {names(p, 1, source=f"127.0.{n}.1")[0] for n in range(1, 30)}
    assert len(seen) > 1


def test_hash_on_argument_maps_keys_like_nginx(backends, proxy):
    a, b, c = backends(3)
    p = proxy(conf(f"hash $arg_k; server {a.address}; server {b.address}; server {c.address};"))
    # nginx-semantics.md 3.7 vectors: user1 -> 0, user2 -> 1, /a/b -> 1
    assert names(p, 2, path="/?k=user1") == ["b1", "b1"]
    assert names(p, 1, path="/?k=user2") == ["b2"]
    assert names(p, 1, path="/?k=/a/b") == ["b2"]
    # empty key falls back to round robin
    assert sorted(names(p, 3, path="/")) == ["b1", "b2", "b3"]


def test_least_conn_prefers_the_idle_server(backends, proxy):
    import threading

    a, b = backends(2)
    p = proxy(conf(f"least_conn; server {a.address}; server {b.address};"))
    slow = threading.Thread(target=p.request, args=("GET", "/sleep/1.5"))
    slow.start()
    import time

    deadline = time.monotonic() + 5
    while not (a.received or b.received) and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = "b1" if a.received else "b2"
    others = names(p, 4)
    slow.join()
    assert busy not in others
