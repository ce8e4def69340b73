"""From an AppSpec to argv/env/cwd: substitution without a shell, unless asked."""

from __future__ import annotations

import pytest

from nonstop.config.model import AppSpec
from nonstop.supervisor.command import build_launch
from nonstop.supervisor.errors import StartFailed


def app(command: str, **kw: object) -> AppSpec:
    return AppSpec(name="web", command=command, ports=(8080, 8000), **kw)  # type: ignore[arg-type]


def test_port_and_release_are_substituted_into_argv_words() -> None:
    spec = build_launch(
        app("java -jar {release}/app.jar --server.port={port}"), 8080, "/srv/v2", "/l", {}
    )
    assert spec.argv == ("java", "-jar", "/srv/v2/app.jar", "--server.port=8080")


def test_a_release_with_spaces_stays_one_argument_and_adds_none() -> None:
    spec = build_launch(app("run --release {release}"), 1, "v2 --evil; rm -rf /", "/l", {})
    assert spec.argv == ("run", "--release", "v2 --evil; rm -rf /")


def test_other_braces_pass_through_untouched() -> None:
    spec = build_launch(app("sh -c 'echo ${HOME} {x}' {port}"), 9, "r", "/l", {})
    assert spec.argv == ("sh", "-c", "echo ${HOME} {x}", "9")


def test_shell_mode_runs_the_substituted_text_under_sh() -> None:
    spec = build_launch(app("exec app --port={port} > /dev/null", shell=True), 7, "r", "/l", {})
    assert spec.argv == ("/bin/sh", "-c", "exec app --port=7 > /dev/null")


def test_env_is_added_to_the_base_environment_with_substitution() -> None:
    spec = build_launch(
        app("x", env=(("PORT", "{port}"), ("MODE", "prod"))), 8000, "r", "/l", {"PATH": "/bin"}
    )
    assert dict(spec.env) == {"PATH": "/bin", "PORT": "8000", "MODE": "prod"}


def test_cwd_may_name_the_release() -> None:
    spec = build_launch(app("x", cwd="/srv/{release}/"), 1, "v3", "/l", {})
    assert spec.cwd == "/srv/v3"


@pytest.mark.parametrize("command", ["", "   ", "java 'unclosed"])
def test_an_unsplittable_or_empty_command_is_refused(command: str) -> None:
    with pytest.raises(StartFailed, match="web"):
        build_launch(app(command), 1, "r", "/l", {})


def test_an_app_gets_a_minimal_base_environment_not_nonstops_whole_one() -> None:
    from nonstop.supervisor.command import base_environment

    kept = {
        "PATH": "/opt/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "TZ": "Europe/Berlin",
        "HOME": "/root",
        "USER": "root",
    }
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "NOTIFY_SOCKET": "/run/systemd/notify"}
    assert base_environment({**kept, **secrets}, None) == kept


def test_an_app_run_as_another_user_gets_that_users_home_and_name_and_a_default_path() -> None:
    from nonstop.config.accounts import Account
    from nonstop.supervisor.command import DEFAULT_PATH, base_environment

    web = Account("web", 1001, 1001, (), "/home/web")
    env = base_environment({"HOME": "/root", "USER": "root", "LOGNAME": "root"}, web)
    assert env == {"PATH": DEFAULT_PATH, "HOME": "/home/web", "USER": "web", "LOGNAME": "web"}
    spec = build_launch(app("x", env=(("MODE", "prod"),)), 1, "r", "/l", env, web)
    assert spec.account == web and dict(spec.env)["MODE"] == "prod"
