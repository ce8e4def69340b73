"""Test apps: ``pyapp.py`` (stdlib, quick to start) and ``SlowApp.java`` (built on demand).

``build_java_app`` compiles SlowApp with javac and packs it with jar; tests call it once
per session through a fixture and skip when no JDK is installed.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["APPS_DIR", "JAVA_SOURCE", "PYAPP", "build_java_app", "javac_missing", "pyapp_command"]

APPS_DIR = Path(__file__).resolve().parent
PYAPP = APPS_DIR / "pyapp.py"
JAVA_SOURCE = APPS_DIR / "SlowApp.java"


def pyapp_command(extra: str = "") -> str:
    """An ``AppSpec.command`` running pyapp with ``{port}`` and ``{release}``."""
    python, script = shlex.quote(sys.executable), shlex.quote(str(PYAPP))
    return f"{python} {script} {{port}} --release {{release}} {extra}".strip()


def javac_missing() -> str | None:
    """Why the Java app cannot be built here, or None if it can."""
    for tool in ("javac", "jar", "java"):
        if shutil.which(tool) is None:
            return f"{tool} not found (install openjdk-17-jdk-headless)"
    return None


def build_java_app(dest: Path) -> Path:
    """Compile SlowApp.java into ``dest/app.jar`` and return the jar's path."""
    classes = dest / "classes"
    classes.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["javac", "-nowarn", "-XDignore.symbol.file", "-d", str(classes), str(JAVA_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    jar = dest / "app.jar"
    subprocess.run(
        ["jar", "--create", "--file", str(jar), "--main-class", "SlowApp", "-C", str(classes), "."],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return jar
