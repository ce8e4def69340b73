"""``TlsContexts`` from real configs, checked by in-memory handshakes with Python's ssl.

No sockets: a client ``SSLObject`` and the listener's context talk through memory BIOs,
so every certificate, protocol and ALPN choice is the one a real client would see.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from nonstop.config import Config, load
from nonstop.errors import ConfigError
from nonstop.proxy.tls import DEFAULT_CIPHERS, TlsContexts

KEY = ("127.0.0.1", 8443)


class Certs:
    """A CA and the certificate files a test writes into its directory."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.ca = trustme.CA()

    def issue(self, stem: str, *names: str, ca: trustme.CA | None = None) -> None:
        cert = (ca or self.ca).issue_cert(*names)
        (self.dir / f"{stem}.crt").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        (self.dir / f"{stem}.key").write_bytes(cert.private_key_pem.bytes())

    def client(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = False  # the tests read the SAN themselves
        self.ca.configure_trust(context)
        if maximum is not None:
            context.maximum_version = maximum
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def server(names: str, stem: str, extra: str = "", listen: str = "127.0.0.1:8443 ssl") -> str:
    return f"""
  server {{
    listen {listen};
    server_name {names};
    ssl_certificate {stem}.crt;
    ssl_certificate_key {stem}.key;
    {extra}
    return 200 "{stem}";
  }}"""


def write(tmp: Path, *servers: str) -> Config:
    path = tmp / "nginx.conf"
    path.write_text("events {}\nhttp {" + "".join(servers) + "\n}\n")
    return load(str(path))


def pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


class Session:
    """One client connection through memory BIOs."""

    def __init__(
        self,
        context: ssl.SSLContext,
        client: ssl.SSLContext,
        sni: str | None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client.wrap_bio(self.c_in, self.c_out, server_hostname=sni, session=session)
        self.server = context.wrap_bio(self.s_in, self.s_out, server_side=True)
        done = {"client": False, "server": False}
        for _ in range(20):
            for name, obj in (("client", self.client), ("server", self.server)):
                if not done[name]:
                    try:
                        obj.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
                pump(self.c_out, self.s_in)
                pump(self.s_out, self.c_in)
            if all(done.values()):
                break
        assert all(done.values()), "handshake did not finish"

    def exchange(self, data: bytes) -> bytes:
        """Server sends ``data``; the client reads it (and the TLS 1.3 tickets before it)."""
        self.server.write(data)
        pump(self.s_out, self.c_in)
        return self.client.read(len(data))

    def names(self) -> list[str]:
        cert = self.client.getpeercert()
        return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


def context_of(tls: TlsContexts, key: tuple[str, int] = KEY) -> ssl.SSLContext:
    context = tls.context_for(key)
    assert context is not None
    return context


# --------------------------------------------------------------------------- selection


def test_sni_picks_exact_and_wildcard_certificates_and_default_for_unknown_names(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("a", "a.example.com")
    certs.issue("w", "*.example.com")
    certs.issue("d", "default.test")
    tls = TlsContexts()
    tls.load(
        write(
            tmp_path,
            server("default.test", "d"),
            server("a.example.com", "a"),
            server("*.example.com", "w"),
        )
    )
    context = context_of(tls)
    assert Session(context, certs.client(), "a.example.com").names() == ["a.example.com"]
    assert Session(context, certs.client(), "b.example.com").names() == ["*.example.com"]
    assert Session(context, certs.client(), "other.test").names() == ["default.test"]
    assert Session(context, certs.client(), None).names() == ["default.test"]


def test_default_server_flag_chooses_the_certificate_for_unknown_names(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("a", "a.test")
    certs.issue("b", "b.test")
    tls = TlsContexts()
    tls.load(
        write(
            tmp_path,
            server("a.test", "a"),
            server("b.test", "b", listen="127.0.0.1:8443 ssl default_server"),
        )
    )
    assert Session(context_of(tls), certs.client(), "unknown.test").names() == ["b.test"]


def test_full_chain_with_an_intermediate_verifies_against_the_root_only(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("chain", "chain.test", ca=certs.ca.create_child_ca())
    tls = TlsContexts()
    tls.load(write(tmp_path, server("chain.test", "chain")))
    session = Session(context_of(tls), certs.client(), "chain.test")
    assert session.names() == ["chain.test"]  # verification against the root passed


def test_wildcard_listener_also_serves_names_of_an_address_it_absorbs(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("any", "any.test")
    certs.issue("local", "local.test")
    tls = TlsContexts()
    tls.load(
        write(
            tmp_path,
            server("any.test", "any", listen="8443 ssl"),
            server("local.test", "local"),
        )
    )
    context = context_of(tls, ("0.0.0.0", 8443))
    assert Session(context, certs.client(), "local.test").names() == ["local.test"]
    assert Session(context, certs.client(), None).names() == ["any.test"]


def test_alpn_negotiates_http_1_1(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a")))
    client = certs.client()
    client.set_alpn_protocols(["h2", "http/1.1"])
    assert Session(context_of(tls), client, "a.test").client.selected_alpn_protocol() == (
        "http/1.1"
    )


def test_the_server_object_calls_read_write_and_pending_in_c_and_still_talks(
    certs: Certs, tmp_path: Path
) -> None:
    """The listener's objects skip ssl.SSLObject's Python wrappers; bytes still flow."""
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a")))
    session = Session(context_of(tls), certs.client(), "a.test")
    inner = session.server._sslobj  # type: ignore[attr-defined]
    for name in ("read", "write", "pending"):
        assert getattr(session.server, name).__self__ is inner, name
    assert session.exchange(b"response") == b"response"
    session.client.write(b"GET / HTTP/1.1\r\n\r\n")
    pump(session.c_out, session.s_in)
    buffer = bytearray(64)
    assert session.server.read(64, buffer) == 18 and buffer[:18] == b"GET / HTTP/1.1\r\n\r\n"
    assert session.server.pending() == 0
    assert session.names() == ["a.test"]


# --------------------------------------------------------------------------- settings


def test_default_protocols_are_tls_1_2_and_1_3(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a")))
    context = context_of(tls)
    assert (context.minimum_version, context.maximum_version) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    )
    assert Session(context, certs.client(), "a.test").client.version() == "TLSv1.3"


def test_old_protocols_in_a_config_load_without_failing(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a", "ssl_protocols TLSv1 TLSv1.1 TLSv1.2;")))
    context = context_of(tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2
    session = Session(context, certs.client(), "a.test")
    assert session.client.version() == "TLSv1.2"


def test_tls_1_3_only_refuses_a_tls_1_2_client(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a", "ssl_protocols TLSv1.3;")))
    with pytest.raises(ssl.SSLError):
        Session(context_of(tls), certs.client(maximum=ssl.TLSVersion.TLSv1_2), "a.test")


def test_ciphers_and_server_preference_are_applied(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    extra = "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; ssl_prefer_server_ciphers on;"
    tls.load(write(tmp_path, server("a.test", "a", extra)))
    context = context_of(tls)
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert not context.options & ssl.OP_NO_TICKET
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    client = certs.client(maximum=ssl.TLSVersion.TLSv1_2)
    cipher = Session(context, client, "a.test").client.cipher()
    assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_prefer_server_ciphers_is_off_by_default_as_in_nginx(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a")))
    assert not context_of(tls).options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_invalid_cipher_string_is_a_config_error_naming_it(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    config = write(tmp_path, server("a.test", "a", "ssl_ciphers NO-SUCH-CIPHER;"))
    with pytest.raises(ConfigError, match=r'invalid "ssl_ciphers NO-SUCH-CIPHER"') as info:
        TlsContexts().load(config)
    assert info.value.where.startswith(str(tmp_path / "nginx.conf"))


def test_invalid_session_cache_is_a_config_error(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    config = write(tmp_path, server("a.test", "a", "ssl_session_cache shared:SSL;"))
    with pytest.raises(ConfigError, match="session cache"):
        TlsContexts().load(config)


def test_session_settings_nginx_writes_are_accepted(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    extra = "ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;"
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a", extra)))
    assert Session(context_of(tls), certs.client(), "a.test").names() == ["a.test"]


def test_session_ticket_resumes_a_session_after_a_reload(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    config = write(tmp_path, server("a.test", "a"))
    tls = TlsContexts()
    tls.load(config)
    client = certs.client()
    first = Session(context_of(tls), client, "a.test")
    assert first.exchange(b"hello") == b"hello"
    assert first.client.session is not None
    tls.load(config)
    again = Session(context_of(tls), client, "a.test", session=first.client.session)
    assert again.client.session_reused


# --------------------------------------------------------------------------- reload


def test_reload_swaps_certificates_in_place_on_the_same_context(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("a", "old.test")
    config = write(tmp_path, server("old.test new.test", "a"))
    tls = TlsContexts()
    tls.load(config)
    before = context_of(tls)
    open_session = Session(before, certs.client(), "old.test")
    certs.issue("a", "new.test")  # the same files, rewritten
    tls.load(config)
    assert context_of(tls) is before
    assert Session(before, certs.client(), "new.test").names() == ["new.test"]
    assert open_session.exchange(b"still here") == b"still here"


def test_reload_applies_new_settings_to_the_live_context(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a", "ssl_ciphers AES128-SHA256;")))
    context = context_of(tls)
    tls.load(write(tmp_path, server("a.test", "a", "ssl_protocols TLSv1.3;")))
    assert context_of(tls) is context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fresh.set_ciphers(DEFAULT_CIPHERS)
    assert context.get_ciphers() == fresh.get_ciphers()


def test_reload_with_a_mismatched_key_changes_nothing(certs: Certs, tmp_path: Path) -> None:
    certs.issue("a", "a.test")
    certs.issue("b", "b.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a"), server("b.test", "b")))
    context = context_of(tls)
    (tmp_path / "b.key").write_bytes((tmp_path / "a.key").read_bytes())
    certs.issue("a", "a2.test")  # a good new certificate next to the broken one
    bad = write(
        tmp_path,
        server("a.test", "a", "ssl_protocols TLSv1.3;"),
        server("b.test", "b"),
    )
    with pytest.raises(ConfigError, match=r'certificate ".*b\.crt" does not match key'):
        tls.load(bad)
    assert context_of(tls) is context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert Session(context, certs.client(), "a.test").names() == ["a.test"]
    assert Session(context, certs.client(), "b.test").names() == ["b.test"]


def test_a_listen_address_added_by_reload_gets_its_own_context(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("a", "a.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("a.test", "a")))
    assert tls.context_for(("127.0.0.1", 9443)) is None
    tls.load(write(tmp_path, server("a.test", "a", listen="127.0.0.1:9443 ssl")))
    assert tls.context_for(KEY) is None
    assert Session(context_of(tls, ("127.0.0.1", 9443)), certs.client(), None).names() == ["a.test"]


# --------------------------------------------------------------------------- errors


def broken(tmp: Path, certs: Certs, cert: str, key: str) -> ConfigError:
    certs.issue("a", "a.test")
    certs.issue("b", "b.test")
    text = server("a.test", "a").replace("a.crt", cert).replace("a.key", key)
    config = write(tmp, text)
    with pytest.raises(ConfigError) as info:
        TlsContexts().load(config)
    assert info.value.where == f"{tmp / 'nginx.conf'}:3"
    return info.value


def test_missing_certificate_names_the_file(certs: Certs, tmp_path: Path) -> None:
    error = broken(tmp_path, certs, "gone.crt", "a.key")
    assert error.message == f'cannot load certificate "{tmp_path / "gone.crt"}": no such file'


def test_missing_key_names_the_file(certs: Certs, tmp_path: Path) -> None:
    error = broken(tmp_path, certs, "a.crt", "gone.key")
    assert f'certificate key "{tmp_path / "gone.key"}": no such file' in error.message


def test_key_of_another_certificate_is_a_mismatch(certs: Certs, tmp_path: Path) -> None:
    error = broken(tmp_path, certs, "a.crt", "b.key")
    assert error.message == (
        f'certificate "{tmp_path / "a.crt"}" does not match key "{tmp_path / "b.key"}"'
    )


def test_certificate_that_is_not_pem_is_named(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "junk.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    error = broken(tmp_path, certs, "junk.crt", "a.key")
    assert f'cannot load certificate "{tmp_path / "junk.crt"}"' in error.message


def test_key_file_without_a_key_is_named(certs: Certs, tmp_path: Path) -> None:
    error = broken(tmp_path, certs, "a.crt", "a.crt")
    assert f'certificate key "{tmp_path / "a.crt"}": no PEM private key' in error.message


def test_passphrase_protected_key_is_refused_without_prompting(
    certs: Certs, tmp_path: Path
) -> None:
    (tmp_path / "enc.key").write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    error = broken(tmp_path, certs, "a.crt", "enc.key")
    assert "passphrase" in error.message


# --------------------------------------------------------------------------- extras


def _rsa(certs: Certs) -> None:
    """An RSA certificate: DHE-RSA ciphers need one."""
    leaf = certs.ca.issue_cert("default.test", key_type=trustme.KeyType.RSA)
    (certs.dir / "d.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    (certs.dir / "d.key").write_bytes(leaf.private_key_pem.bytes())


def test_ssl_dhparam_loads_the_groups_dhe_ciphers_need(certs: Certs, tmp_path: Path) -> None:
    _rsa(certs)
    dh = subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe2048"],
        capture_output=True,
        check=True,
    ).stdout
    (tmp_path / "dh.pem").write_bytes(dh)
    extra = "ssl_protocols TLSv1.2; ssl_ciphers DHE-RSA-AES128-GCM-SHA256; ssl_dhparam dh.pem;"
    tls = TlsContexts()
    tls.load(write(tmp_path, server("default.test", "d", extra)))
    session = Session(context_of(tls), certs.client(ssl.TLSVersion.TLSv1_2), "default.test")
    cipher = session.client.cipher()
    assert cipher is not None and cipher[0] == "DHE-RSA-AES128-GCM-SHA256"


def test_ssl_dhparam_names_a_file_it_cannot_load(certs: Certs, tmp_path: Path) -> None:
    certs.issue("d", "default.test")
    (tmp_path / "dh.pem").write_text("not a pem\n")
    tls = TlsContexts()
    with pytest.raises(ConfigError, match=r'cannot load DH parameters ".*dh.pem" \(ssl_dhparam\)'):
        tls.load(write(tmp_path, server("default.test", "d", "ssl_dhparam dh.pem;")))


@pytest.mark.parametrize(("setting", "ticket"), [("on", True), ("off", False)])
def test_ssl_session_tickets_off_issues_no_ticket(
    certs: Certs, tmp_path: Path, setting: str, ticket: bool
) -> None:
    certs.issue("d", "default.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("default.test", "d", f"ssl_session_tickets {setting};")))
    session = Session(context_of(tls), certs.client(ssl.TLSVersion.TLSv1_2), "default.test")
    assert session.client.session is not None
    assert session.client.session.has_ticket is ticket


def test_ssl_stapling_is_accepted_with_a_notice_that_it_cannot_staple(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("d", "default.test")
    extra = "ssl_stapling on; ssl_stapling_verify on; ssl_trusted_certificate d.crt;"
    config = write(tmp_path, server("default.test", "d", extra))
    assert any("cannot staple OCSP" in notice for notice in config.notices)


@pytest.mark.parametrize(
    ("curves", "shared"),
    [
        ("secp384r1", False),
        ("prime256v1", True),
        ("P-384", False),  # the NIST names nginx's OpenSSL takes
        ("P-256", True),
        ("secp256r1", True),  # and the SEC name of prime256v1
        ("auto", True),
        ("X25519:prime256v1:secp384r1", True),  # a list: OpenSSL's groups, which include it
    ],
)
def test_ssl_ecdh_curve_decides_which_group_a_client_can_agree_on(
    certs: Certs, tmp_path: Path, curves: str, shared: bool
) -> None:
    certs.issue("d", "default.test")
    tls = TlsContexts()
    tls.load(write(tmp_path, server("default.test", "d", f"ssl_ecdh_curve {curves};")))
    client = certs.client(ssl.TLSVersion.TLSv1_2)
    client.set_ecdh_curve("prime256v1")  # the only group this client offers
    if shared:
        assert Session(context_of(tls), client, "default.test").client.cipher() is not None
    else:
        with pytest.raises(ssl.SSLError):
            Session(context_of(tls), client, "default.test")


def test_ssl_ecdh_curve_with_a_list_says_the_embedded_engine_offers_openssls_groups(
    certs: Certs, tmp_path: Path
) -> None:
    certs.issue("d", "default.test")
    config = write(tmp_path, server("default.test", "d", "ssl_ecdh_curve X25519:secp384r1;"))
    assert any("OpenSSL's default groups" in notice for notice in config.notices)


@pytest.mark.parametrize(
    "curves", ["nocurve", "X25519:nocurve:P-256", "RSA", "X25519:SHA256", "secp112r1"]
)
def test_ssl_ecdh_curve_names_an_unknown_curve(certs: Certs, tmp_path: Path, curves: str) -> None:
    certs.issue("d", "default.test")
    tls = TlsContexts()
    bad = next(n for n in curves.split(":") if n not in ("X25519", "P-256"))
    with pytest.raises(ConfigError, match=f'unknown curve "{bad}" in "ssl_ecdh_curve"'):
        tls.load(write(tmp_path, server("default.test", "d", f"ssl_ecdh_curve {curves};")))
