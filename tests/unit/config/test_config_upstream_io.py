"""proxy_buffering and its sizes, and proxy_ssl_* for https:// passes: nginx's defaults,
inheritance, and the rules between the sizes that ``nginx -t`` holds a config to
(ngx_http_proxy_merge_loc_conf; nginx-tests' proxy_buffering.t, proxy_ssl*.t)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nonstop.config import Config
from nonstop.config.model import ProxyBuffering, ProxySsl, ResolverSpec
from nonstop.errors import ConfigError

Load = Callable[..., Config]


def location(http: Load, text: str, outer: str = "") -> Config:
    return http(f"{outer}\nserver {{\nlocation / {{\n{text}\n}}\n}}")


def refused(http: Load, text: str, outer: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        location(http, text, outer)
    return info.value


def test_buffering_defaults_are_nginx_s(http: Load) -> None:
    cfg = location(http, "proxy_pass http://127.0.0.1:8080;")
    spec = cfg.servers[0].locations[0].buffering
    assert spec == ProxyBuffering()
    assert (spec.enabled, spec.buffer_size, spec.buffers, spec.buffer) == (True, 4096, 8, 4096)
    assert spec.memory == 4096 + 8 * 4096
    assert spec.max_temp_file_size == 1024**3
    assert spec.accel_buffering


def test_buffering_settings_inherit_from_http_and_server(http: Load) -> None:
    cfg = http(
        """
        proxy_buffering off;
        proxy_buffers 16 8k;
        server {
          proxy_buffer_size 16k;
          location / { proxy_pass http://127.0.0.1:8080; }
          location /b { proxy_pass http://127.0.0.1:8080; proxy_buffering on;
                        proxy_max_temp_file_size 0; proxy_ignore_headers X-Accel-Buffering; }
        }
        """
    )
    a, b = (loc.buffering for loc in cfg.servers[0].locations)
    assert (a.enabled, a.buffers, a.buffer, a.buffer_size) == (False, 16, 8192, 16384)
    assert a.busy_buffers_size == 2 * 16384  # twice the larger of the two sizes
    assert (b.enabled, b.max_temp_file_size, b.accel_buffering) == (True, 0, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "proxy_buffer_size 16k;",  # busy (2 x 16k) > 7 x 4k
            '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers"'
            " minus one buffer",
        ),
        (
            "proxy_busy_buffers_size 2k;",
            '"proxy_busy_buffers_size" must be equal to or greater than the maximum of the value'
            ' of "proxy_buffer_size" and one of the "proxy_buffers"',
        ),
        ("proxy_buffers 1 4k;", 'there must be at least 2 "proxy_buffers"'),
        ("proxy_buffers 0 4k;", 'invalid value "0 4k" in "proxy_buffers" directive'),
        ("proxy_buffers 8 lots;", 'invalid value "8 lots" in "proxy_buffers" directive'),
        (
            "proxy_temp_file_write_size 1k;",
            '"proxy_temp_file_write_size" must be equal to or greater than',
        ),
        (
            "proxy_max_temp_file_size 1k;",
            '"proxy_max_temp_file_size" must be equal to zero to disable temporary files usage',
        ),
        ("proxy_buffering maybe;", 'invalid value "maybe" in "proxy_buffering" directive'),
        ("proxy_ignore_headers X-Nope;", 'invalid value "X-Nope"'),
        ("proxy_buffer_size much;", '"proxy_buffer_size" directive invalid value'),
    ],
)
def test_buffer_sizes_nginx_refuses_are_refused_where_written(
    http: Load, text: str, message: str
) -> None:
    err = refused(http, f"proxy_pass http://127.0.0.1:8080;\n{text}")
    assert err.message.startswith(message), err.message
    assert err.where.endswith(":7")


def test_sizes_that_fit_only_together_across_levels_are_accepted(http: Load) -> None:
    cfg = location(
        http, "proxy_pass http://127.0.0.1:8080;\nproxy_buffer_size 16k;", "proxy_buffers 16 4k;"
    )
    assert cfg.servers[0].locations[0].buffering.buffer_size == 16384


def test_https_pass_gets_port_443_and_nginx_s_tls_defaults(http: Load) -> None:
    cfg = location(http, "proxy_pass https://127.0.0.1;")
    [loc] = cfg.servers[0].locations
    [up] = cfg.upstreams
    assert loc.proxy_pass is not None
    assert (loc.proxy_pass.scheme, loc.proxy_pass.upstream) == ("https", "127.0.0.1:443")
    assert loc.proxy_pass.proxy_host == "127.0.0.1"
    assert up.servers[0].port == 443
    assert loc.proxy_ssl == ProxySsl()
    assert not loc.proxy_ssl.verify and not loc.proxy_ssl.server_name


def test_https_pass_to_an_upstream_with_proxy_ssl_settings(http: Load) -> None:
    cfg = http(
        """
        upstream app { server 127.0.0.1:8443; }
        proxy_ssl_trusted_certificate ca.pem;
        server {
          proxy_ssl_verify on;
          location / {
            proxy_pass https://app;
            proxy_ssl_server_name on;
            proxy_ssl_name backend.internal;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate client.pem;
            proxy_ssl_certificate_key client.key;
            proxy_ssl_verify_depth 2;
          }
        }
        """
    )
    [loc] = cfg.servers[0].locations
    ssl = loc.proxy_ssl
    assert ssl.verify and ssl.server_name and ssl.verify_depth == 2
    assert ssl.name is not None and ssl.name.raw == "backend.internal"
    assert ssl.protocols == ("TLSv1.3",)
    assert ssl.trusted_certificate is not None and ssl.trusted_certificate.endswith("/ca.pem")
    assert ssl.certificate is not None and ssl.certificate.endswith("/client.pem")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("proxy_ssl_verify on;", "no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
        (
            "proxy_ssl_certificate c.pem;",
            'no "proxy_ssl_certificate_key" is defined for certificate "c.pem"',
        ),
        ("proxy_ssl_protocols TLSv9;", 'invalid value "TLSv9" in "proxy_ssl_protocols"'),
        ("proxy_ssl_server_name yes;", 'invalid value "yes" in "proxy_ssl_server_name"'),
    ],
)
def test_proxy_ssl_settings_nginx_refuses_are_refused(http: Load, text: str, message: str) -> None:
    err = refused(http, f"proxy_pass https://127.0.0.1:8443;\n{text}")
    assert err.message.startswith(message), err.message


def test_resolver_addresses_valid_ipv6_and_timeout_inherit_to_the_location(http: Load) -> None:
    cfg = location(
        http,
        "proxy_pass http://$host:8080;",
        "resolver 127.0.0.1 [::1]:5353 valid=30s ipv6=off;\nresolver_timeout 5s;",
    )
    assert cfg.servers[0].locations[0].resolver == ResolverSpec(
        (("127.0.0.1", 53), ("::1", 5353)), valid=30.0, ipv6=False, timeout=5.0
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resolver 127.0.0.1 valid=soon;", 'invalid parameter "valid=soon"'),
        ("resolver 127.0.0.1 status_zone=z;", 'resolver parameter "status_zone=z" is outside'),
        ("resolver valid=5s;", 'invalid number of arguments in "resolver" directive'),
        ("resolver nowhere.invalid;", 'host not found in resolver "nowhere.invalid"'),
    ],
)
def test_resolver_settings_nginx_refuses_are_refused(http: Load, text: str, message: str) -> None:
    err = refused(http, f"proxy_pass http://$host;\n{text}")
    assert err.message.startswith(message), err.message
