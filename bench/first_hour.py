"""How long `make example` takes on a cold checkout, until the example says "Ctrl-C to stop."

Each round clones the current commit (HEAD) into a fresh directory, so the virtualenv,
the installed packages and the compiled modules all start from nothing, and runs `make
example` with pip's cache off (PIP_NO_CACHE_DIR=1). It records when the install is done,
when nonstop listens and when both deploys are done, then sends Ctrl-C to the example's
process group. The example's own port (8000) and its app ports (9001, 9002) must be free.

    .venv/bin/python bench/first_hour.py              # 3 rounds
    .venv/bin/python bench/first_hour.py --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._harness import save_results  # noqa: E402

MARKS = {
    "installed": "touch .venv/.installed",
    "listening": "nonstop listens on",
    "deployed": "Ctrl-C to stop.",
}
LIMIT = 600.0


def one_round(where: Path) -> dict[str, float | str]:
    """Clone, `make example` until the example is done or the limit; the seconds to each mark."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    log = where.parent / "make-example.log"
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    start = time.monotonic()
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "example"],
            cwd=where,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    seen: dict[str, float | str] = {}
    try:
        while time.monotonic() - start < LIMIT and make.poll() is None:
            text = log.read_text(errors="replace")
            for name, mark in MARKS.items():
                if mark in text and name not in seen:
                    seen[name] = round(time.monotonic() - start, 2)
            if "deployed" in seen:
                break
            time.sleep(0.05)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # the example's Ctrl-C: it stops the daemon
            make.wait(60)
    text = log.read_text(errors="replace")
    seen["data_plane"] = next(
        (line for line in text.splitlines() if line.startswith("data plane:")), "?"
    )
    if "deployed" not in seen:
        raise SystemExit(f"make example did not finish:\n{text[-3000:]}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    for n in range(args.rounds):
        scratch = Path(tempfile.mkdtemp(prefix="nonstop-first-hour-"))
        try:
            load = os.getloadavg()[0]
            result = one_round(scratch / "nonstop")
            result["load_before"] = round(load, 2)
            rounds.append(result)
            print(f"round {n + 1}: {result}", flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = {name: statistics.median(float(r[name]) for r in rounds) for name in MARKS if rounds}
    print("medians (s):", summary)
    path = save_results(ROOT / "bench" / "results", "first_hour", args, {
        "rounds": rounds, "medians": summary
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
