"""Build hook: compile the proxy's hot path with mypyc.

The data plane is plain, strictly typed Python; mypyc (part of mypy) turns these modules
into C extensions, which cuts the instructions per proxied request to about a third
(bench/hotpath.py --instructions).  Set NONSTOP_COMPILE=0 to install the pure-Python
modules instead (same behaviour, slower).  Where no C compiler works, the build says so
in one line and installs them interpreted too; ``nonstop -V`` tells which one is in use.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

# The modules on the per-request path.  tests/conftest.py refuses to run against a
# compiled module that is older than its source, so edit, then `make build`.
COMPILED = [
    "src/nonstop/proxy/protocol.py",
    "src/nonstop/proxy/exchange.py",
    "src/nonstop/proxy/request_head.py",
    "src/nonstop/proxy/forward_head.py",
    "src/nonstop/proxy/response_head.py",
    "src/nonstop/proxy/retry.py",
    "src/nonstop/proxy/connection_pool.py",
    "src/nonstop/proxy/outbox.py",
    "src/nonstop/proxy/request.py",
    "src/nonstop/proxy/router.py",
    "src/nonstop/proxy/rewrite.py",
    "src/nonstop/proxy/error_page.py",
    "src/nonstop/proxy/static.py",
    "src/nonstop/proxy/spool.py",
    "src/nonstop/proxy/resolver.py",
    "src/nonstop/proxy/response_filter.py",
    "src/nonstop/proxy/gzip.py",
    "src/nonstop/proxy/proxy_redirect.py",
    "src/nonstop/proxy/access.py",
    "src/nonstop/proxy/guard.py",
    "src/nonstop/proxy/limits.py",
    "src/nonstop/proxy/variables.py",
    "src/nonstop/proxy/uri.py",
    "src/nonstop/proxy/responses.py",
    "src/nonstop/proxy/charset.py",
    "src/nonstop/proxy/accesslog.py",
    "src/nonstop/proxy/metrics.py",
    "src/nonstop/proxy/server.py",
    "src/nonstop/proxy/tls.py",
    "src/nonstop/proxy/tls_stream.py",
    "src/nonstop/proxy/upstream.py",
    "src/nonstop/proxy/upstream_tls.py",
    "src/nonstop/proxy/balancers/balancer.py",
    "src/nonstop/proxy/balancers/peers.py",
    "src/nonstop/proxy/balancers/round_robin.py",
    "src/nonstop/proxy/balancers/least_conn.py",
    "src/nonstop/proxy/balancers/ip_hash.py",
    "src/nonstop/proxy/balancers/hash.py",
    "src/nonstop/proxy/balancers/random.py",
]

class InterpretedDataPlane(UserWarning):
    """No C compiler worked: the data plane is installed as Python."""


# What a missing or broken C compiler raises out of build_ext.
_NO_COMPILER = (CCompilerError, CompileError, ExecError, LinkError, PlatformError)


def _extensions() -> list[Any]:
    if os.environ.get("NONSTOP_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    # One C file per module, so that the compiler runs on every core (BuildExt).
    return list(mypycify(COMPILED, opt_level="3", multi_file=True))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class BuildExt(build_ext):
    """build_ext that runs one compiler per core, and falls back to interpreted modules.

    Every C file of every extension is compiled concurrently, at most one compiler per
    core.  If the compiler is missing or fails, no compiled module is installed (a shim
    without its shared library would not import): the package then runs the same
    modules as Python, and the build says so in one line.
    """

    def build_extensions(self) -> None:
        self.check_extensions_list(self.extensions)
        self._probe()
        slots = threading.BoundedSemaphore(_cores())
        compile_all: Callable[..., list[str]] = self.compiler.compile

        def compile_each(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
            def one(source: str) -> list[str]:
                with slots:
                    return compile_all([source], *args, **kwargs)

            with ThreadPoolExecutor(max(1, len(sources))) as pool:
                return [obj for objects in pool.map(one, sources) for obj in objects]

        self.compiler.compile = compile_each
        with ThreadPoolExecutor(max(1, len(self.extensions))) as pool:
            for _ in pool.map(self.build_extension, self.extensions):
                pass

    def _probe(self) -> None:
        """Compile one small file as the extensions will be, quietly, before all of them:
        a missing compiler or missing Python headers then fail once, not once a file."""
        with tempfile.TemporaryDirectory() as scratch, open(os.devnull, "w") as null:
            source = os.path.join(scratch, "probe.c")
            with open(source, "w") as handle:
                handle.write("#include <Python.h>\nint nonstop_probe(void) { return 0; }\n")
            saved = os.dup(1), os.dup(2)
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            try:
                self.compiler.compile([source], output_dir=scratch, include_dirs=self.include_dirs)
            except _NO_COMPILER as exc:
                command = getattr(self.compiler, "compiler_so", None) or ["the C compiler"]
                raise CompileError(f"{command[0]} cannot build against Python.h") from exc
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])

    def run(self) -> None:
        inplace = self.inplace
        try:
            super().run()
        except _NO_COMPILER as exc:
            self._remove_outputs(inplace)
            # A warning, not a print: pip shows a build backend's warnings, not its output.
            warnings.warn_explicit(
                f"no working C compiler ({str(exc)[:200]}; on Debian: apt-get install "
                "build-essential python3-dev): nonstop's data plane is installed interpreted, "
                "the same code, slower (`nonstop -V` says which)",
                InterpretedDataPlane,
                "setup.py",
                0,
            )

    def _remove_outputs(self, inplace: bool) -> None:
        """Remove what was built, and for --inplace what an earlier build left in src/."""
        for where in (False, True) if inplace else (False,):
            self.inplace = where
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
        self.inplace = inplace
        self.extensions = []


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
