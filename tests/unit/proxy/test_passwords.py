"""htpasswd hashes as nginx checks them (ngx_crypt): its own schemes and the system's crypt()."""

from __future__ import annotations

import base64
import hashlib
import subprocess

import pytest

from nonstop.proxy.passwords import apr1, check_password, system_crypt


def openssl(*args: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_apr1_matches_openssl_for_short_long_and_empty_passwords() -> None:
    for password in ("", "pw", "a much longer password than sixteen bytes"):
        stored = openssl("-apr1", "-salt", "abcdefgh", password)
        assert apr1(password.encode(), stored.encode()) == stored.encode()
        assert check_password(password.encode(), stored)
        assert not check_password(password.encode() + b"x", stored)


@pytest.mark.parametrize("scheme", ["-1", "-5", "-6"])
def test_system_crypt_schemes_are_checked_by_crypt(scheme: str) -> None:
    stored = openssl(scheme, "-salt", "saltsalt", "secret")
    assert check_password(b"secret", stored)
    assert not check_password(b"Secret", stored)


def test_yescrypt_and_bcrypt_come_from_libxcrypt() -> None:
    for setting in (b"$y$j9T$abcdefghijklmnop$", b"$2b$05$abcdefghijklmnopqrstuu"):
        stored = system_crypt(b"secret", setting).decode()
        assert stored.startswith(setting.decode()[:4])
        assert check_password(b"secret", stored) and not check_password(b"secreT", stored)


def test_plain_sha_and_ssha_are_nginx_own() -> None:
    assert check_password(b"pw", "{PLAIN}pw") and not check_password(b"pw ", "{PLAIN}pw")
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
    assert check_password(b"pw", sha) and not check_password(b"px", sha)
    ssha = "{SSHA}" + base64.b64encode(hashlib.sha1(b"pwsalt").digest() + b"salt").decode()
    assert check_password(b"pw", ssha) and not check_password(b"px", ssha)


def test_malformed_or_empty_hashes_never_match() -> None:
    for stored in ("", "*", "$6$", "{SSHA}!!!", "$unknown$x$y"):
        assert not check_password(b"", stored)
        assert not check_password(b"pw", stored)


@pytest.mark.parametrize(
    ("stored", "valid"),
    [
        ("$apr1$salt$Xxd1irWT9ycqoYxGFn4cb.", True),
        ("{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0", True),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", True),
        ("{PLAIN}password", True),
        ("$1$", False),
        ("$apr1$", False),
        ("{SSHA}_____wQadOA1e+/f+T+H3eCQQhRzYWx0", False),
        ("{SSHA}Zm9vCg==", False),
        ("{SHA}_____Mm5Pz8GgiULbPgzG37mj9g=", False),
        ("{SHA}Zm9vCg==", False),
    ],
)
def test_nginx_tests_auth_basic_vectors_for_password(stored: str, valid: bool) -> None:
    """The hashes of nginx-tests' auth_basic.t, each for the password "password"."""
    assert check_password(b"password", stored) is valid
    assert not check_password(b"123", stored)


def test_des_crypt_and_md5_crypt_of_the_system_as_perl_makes_them() -> None:
    for setting in (b"salt", b"$1$salt$"):
        stored = system_crypt(b"password", setting).decode()
        assert check_password(b"password", stored) and not check_password(b"123", stored)
