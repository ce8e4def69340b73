"""The message a failed listen gives: the address always, what to do when it helps."""

from __future__ import annotations

import errno

from nonstop.proxy.server import bind_error


def test_a_privileged_port_refused_says_what_to_do() -> None:
    error = bind_error(PermissionError(errno.EACCES, "Permission denied"), "0.0.0.0", 80)
    assert error.errno == errno.EACCES
    assert "bind() to 0.0.0.0:80 failed (Permission denied)" in str(error)
    assert "CAP_NET_BIND_SERVICE" in str(error)
    assert "a port above 1023" in str(error)


def test_a_refusal_above_1023_has_no_advice_about_privileged_ports() -> None:
    error = bind_error(PermissionError(errno.EACCES, "Permission denied"), "127.0.0.1", 8080)
    assert str(error).endswith("bind() to 127.0.0.1:8080 failed (Permission denied)")


def test_an_ipv6_address_is_bracketed_and_a_port_in_use_said_so() -> None:
    error = bind_error(OSError(errno.EADDRINUSE, "Address already in use"), "::1", 8443)
    assert error.errno == errno.EADDRINUSE
    assert str(error).endswith("bind() to [::1]:8443 failed (address in use)")


def test_any_other_failure_names_the_address_and_the_system_reason() -> None:
    error = bind_error(
        OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), "10.9.9.9", 80
    )
    assert "bind() to 10.9.9.9:80 failed (Cannot assign requested address)" in str(error)
    assert "CAP_NET_BIND_SERVICE" not in str(error)
