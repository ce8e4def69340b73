"""A worker process imports the data plane and the config model, not the control plane."""

from __future__ import annotations

import json
import subprocess
import sys

# what a worker never runs: each of these once brought megabytes into every worker
CONTROL_ONLY = (
    "nonstop.daemon",
    "nonstop.deploy",
    "nonstop.supervisor",
    "nonstop.admin",
    "nonstop.config.loader",
    "nonstop.config.nginxconf",
    "nonstop.config.toml",
    "importlib.metadata",
    "email",
)


def test_the_worker_process_leaves_the_control_plane_unimported() -> None:
    # a fresh interpreter, as the control process starts a worker (python -m nonstop.workers)
    code = (
        "import sys, json; import nonstop.workers.worker, nonstop.errorlog; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "nonstop.proxy.protocol" in loaded  # the data plane itself is there
    unwanted = [m for m in loaded if any(m == c or m.startswith(c + ".") for c in CONTROL_ONLY)]
    assert unwanted == []


def test_the_config_package_still_offers_its_readers() -> None:
    from nonstop.config import compile_template, load, system_resolver

    assert callable(load) and callable(compile_template) and callable(system_resolver)
