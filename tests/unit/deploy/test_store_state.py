"""The SQLite state store: transitions, the deploy lock, interrupted deploys, schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nonstop.clock import FakeClock
from nonstop.deploy.store import SCHEMA_VERSION, DeployLocked, StateStore, StoreError


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=1_700_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> StateStore:
    return StateStore.open(tmp_path / "state", clock)


def test_opens_in_wal_mode_with_a_schema_version(store: StateStore) -> None:
    assert store.path.name == "state.db"
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.schema_version() == SCHEMA_VERSION


def test_reopening_keeps_the_data(tmp_path: Path, clock: FakeClock) -> None:
    first = StateStore.open(tmp_path, clock)
    first.set_live("web", 0, "v1")
    first.close()
    again = StateStore.open(tmp_path, clock)
    live = again.live("web")
    assert live is not None and live.release == "v1"


def test_a_database_from_a_newer_nonstop_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        StateStore.open(tmp_path)


def test_set_live_moves_the_old_release_to_previous(store: StateStore, clock: FakeClock) -> None:
    first = store.set_live("web", 0, "v1")
    assert (first.slot, first.release, first.previous_release) == (0, "v1", None)
    clock.advance(5)
    second = store.set_live("web", 1, "v2")
    assert (second.slot, second.release) == (1, "v2")
    assert (second.previous_slot, second.previous_release) == (0, "v1")
    assert second.since == first.since + 5


def test_restoring_the_same_live_release_keeps_previous(store: StateStore) -> None:
    store.set_live("web", 0, "v1")
    store.set_live("web", 1, "v2")
    again = store.set_live("web", 1, "v2")
    assert again.previous_release == "v1"


def test_instances_are_recorded_updated_and_forgotten(store: StateStore) -> None:
    store.record_instance("web", 0, 8080, "v1", pid=100, pid_start=555)
    store.record_instance("web", 1, 8000, "v2", pid=101)
    store.set_instance_state("web", 8080, "running")
    rows = store.instances("web")
    assert [(r.port, r.release, r.pid, r.state) for r in rows] == [
        (8000, "v2", 101, "starting"),
        (8080, "v1", 100, "running"),
    ]
    assert rows[1].pid_start == 555
    store.record_instance("web", 0, 8080, "v3", pid=102)  # a new process on the same port
    record = store.instance("web", 8080)
    assert record is not None and (record.release, record.pid) == ("v3", 102)
    store.forget_instance("web", 8000)
    assert [r.port for r in store.instances()] == [8080]
    with pytest.raises(ValueError, match="instance state"):
        store.set_instance_state("web", 8080, "sleepy")


def test_releases_are_listed_newest_first(store: StateStore, clock: FakeClock) -> None:
    store.record_instance("web", 0, 8080, "v1", pid=1)
    clock.advance(1)
    store.record_instance("web", 1, 8000, "v2", pid=2)
    assert [r[0] for r in store.releases("web")] == ["v2", "v1"]


def test_a_deploy_records_from_release_outcome_and_durations(
    store: StateStore, clock: FakeClock
) -> None:
    store.set_live("web", 0, "v1")
    deploy = store.begin_deploy("web", "v2", holder="cli deploy", pid=42)
    assert (deploy.outcome, deploy.from_release, deploy.finished_at) == ("running", "v1", None)
    clock.advance(3)
    done = store.finish_deploy(deploy.id, "ok", durations={"gate": 1.5, "drain": 0.2})
    assert done.outcome == "ok" and done.duration == 3.0
    assert done.durations == {"gate": 1.5, "drain": 0.2}
    assert store.history("web")[0] == done


def test_a_second_deploy_is_refused_with_who_holds_the_lock(store: StateStore) -> None:
    first = store.begin_deploy("web", "v2", holder="deploy v2 from ci-runner", pid=42)
    with pytest.raises(DeployLocked) as caught:
        store.begin_deploy("web", "v3", holder="someone else", pid=43)
    message = str(caught.value)
    assert "a deploy of web is already in progress" in message
    assert "deploy v2 from ci-runner" in message and "pid 42" in message
    assert f"deploy #{first.id}" in message
    assert caught.value.exit_code == 1
    assert [d.release for d in store.history("web")] == ["v2"]  # the refused one left no row


def test_other_apps_are_not_locked(store: StateStore) -> None:
    store.begin_deploy("web", "v2", holder="a", pid=1)
    assert store.begin_deploy("api", "v9", holder="b", pid=2).app == "api"


def test_finishing_releases_the_lock(store: StateStore) -> None:
    first = store.begin_deploy("web", "v2", holder="a", pid=1)
    store.finish_deploy(first.id, "refused", reason="not healthy after 60s")
    assert store.lock("web") is None
    assert store.begin_deploy("web", "v3", holder="b", pid=2).release == "v3"


def test_a_deploy_finishes_once(store: StateStore) -> None:
    deploy = store.begin_deploy("web", "v2", holder="a", pid=1)
    store.finish_deploy(deploy.id, "failed")
    with pytest.raises(StoreError, match="already finished"):
        store.finish_deploy(deploy.id, "ok")
    with pytest.raises(ValueError, match="deploy outcome"):
        store.finish_deploy(deploy.id, "running")


def test_resolve_interrupted_marks_running_deploys_and_frees_locks(
    tmp_path: Path, clock: FakeClock
) -> None:
    crashed = StateStore.open(tmp_path, clock)
    crashed.set_live("web", 0, "v1")
    done = crashed.begin_deploy("api", "a2", holder="x", pid=1)
    crashed.finish_deploy(done.id, "ok")
    left = crashed.begin_deploy("web", "v2", holder="x", pid=1)
    crashed._db.close()  # the daemon dies mid-deploy

    restarted = StateStore.open(tmp_path, clock)
    resolved = restarted.resolve_interrupted()
    assert [(d.id, d.outcome) for d in resolved] == [(left.id, "interrupted")]
    assert "nonstop stopped" in resolved[0].reason
    assert restarted.lock("web") is None
    assert restarted.deploy(done.id).outcome == "ok"  # type: ignore[union-attr]
    live = restarted.live("web")
    assert live is not None and live.release == "v1"  # the old release is what serves


def test_a_failing_transition_leaves_nothing_behind(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.set_live("web", 0, "v1")
        store.record_instance("web", 0, 8080, "v1", pid=1)
        raise RuntimeError("crash between the writes")
    assert store.live("web") is None and store.instances() == []


def test_history_is_newest_first_and_limited(store: StateStore) -> None:
    for n in range(5):
        d = store.begin_deploy("web", f"v{n}", holder="a", pid=1)
        store.finish_deploy(d.id, "ok")
    assert [d.release for d in store.history("web", limit=3)] == ["v4", "v3", "v2"]
    assert store.history("nope") == []


def test_a_second_connection_sees_committed_state(store: StateStore) -> None:
    store.set_live("web", 1, "v2")
    reader = StateStore(store.path)
    live = reader.live("web")
    assert live is not None and live.slot == 1


def test_a_version_1_database_gains_the_instances_command_line(tmp_path: Path) -> None:
    from nonstop.deploy.store import _SCHEMA_V1

    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(_SCHEMA_V1 + "INSERT INTO schema_version (version) VALUES (1);")
    db.execute("INSERT INTO instances VALUES ('web', 8001, 0, 'v1', 42, 7, 1.0, 'running', 1.0)")
    db.commit()
    db.close()
    store = StateStore.open(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION == 2
    record = store.instance("web", 8001)
    assert record is not None and (record.pid, record.cmdline) == (42, None)


def test_an_instance_keeps_its_command_line_until_a_newer_one_is_seen(
    store: StateStore,
) -> None:
    store.record_instance("web", 0, 8001, "v1", 42, 7, cmdline="sh\0-c\0app")
    store.set_instance_state("web", 8001, "draining")
    record = store.instance("web", 8001)
    assert record is not None and record.cmdline == "sh\0-c\0app"
    store.set_instance_state("web", 8001, "running", "app\0--port\08001")
    record = store.instance("web", 8001)
    assert record is not None and record.cmdline == "app\0--port\08001"
