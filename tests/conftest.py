import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled module that is older than its source.

    The proxy's hot path is compiled with mypyc (setup.py); Python imports the compiled
    module when one exists, so an edit to the .py would silently not be tested.
    """
    stale = []
    # mypyc puts the code of all modules in one shared library beside the package; the
    # per-module extensions are thin shims that a rebuild may leave untouched.
    shared = [so.stat().st_mtime for so in (ROOT / "src").glob("*__mypyc*.so")]
    for so in (ROOT / "src" / "nonstop").rglob("*.cpython-*.so"):
        source = so.with_name(so.name.split(".", 1)[0] + ".py")
        built = max([so.stat().st_mtime, *shared])
        if source.exists() and source.stat().st_mtime > built:
            stale.append(str(source.relative_to(ROOT)))
    if stale:
        pytest.exit(
            "compiled modules are older than their source: run `make build` "
            f"(or NONSTOP_COMPILE=0 pip install -e .): {', '.join(sorted(stale))}",
            returncode=2,
        )
