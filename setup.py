"""Build hook: compile the proxy's hot path with mypyc.

The data plane is plain, strictly typed Python; mypyc (part of mypy) turns these modules
into C extensions, which roughly halves the interpreter work per proxied request.  Set
NONSTOP_COMPILE=0 to install the pure-Python modules instead (same behaviour, slower).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules on the per-request path.  tests/conftest.py refuses to run against a
# compiled module that is older than its source, so edit, then `make build`.
COMPILED = [
    "src/nonstop/proxy/protocol.py",
    "src/nonstop/proxy/connection_pool.py",
    "src/nonstop/proxy/request.py",
    "src/nonstop/proxy/router.py",
    "src/nonstop/proxy/variables.py",
    "src/nonstop/proxy/uri.py",
    "src/nonstop/proxy/responses.py",
    "src/nonstop/proxy/accesslog.py",
    "src/nonstop/proxy/server.py",
    "src/nonstop/proxy/tls.py",
    "src/nonstop/proxy/tls_stream.py",
    "src/nonstop/proxy/upstream.py",
    "src/nonstop/proxy/balancers/balancer.py",
    "src/nonstop/proxy/balancers/peers.py",
    "src/nonstop/proxy/balancers/round_robin.py",
    "src/nonstop/proxy/balancers/least_conn.py",
    "src/nonstop/proxy/balancers/ip_hash.py",
    "src/nonstop/proxy/balancers/hash.py",
    "src/nonstop/proxy/balancers/random.py",
]


def _extensions() -> list[object]:
    if os.environ.get("NONSTOP_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=_extensions())
