"""The state store when its file fails: a full disk, a corrupt file, a deleted one.

Each failure is a ``StoreError`` ("state store: <reason>", exit code 4) — never a bare
``sqlite3`` error — and leaves what was written before intact.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.support.mounts import fill, small_tmpfs

from nonstop.deploy.store import StateStore, StoreError


def test_a_full_disk_is_a_store_error_and_loses_nothing_written_before() -> None:
    with small_tmpfs("512k") as state:
        store = StateStore.open(state)
        store.set_live("web", 0, "v1")
        filler = fill(state)
        with pytest.raises(StoreError) as failed:
            for i in range(1000):  # until a transition needs a page the disk has not got
                record = store.begin_deploy("web", f"v{i}-" + "x" * 2000, "ci", 1)
                store.finish_deploy(record.id, "ok", "", {})
        assert failed.value.exit_code == 4
        assert str(failed.value).startswith("state store: ")
        assert "full" in str(failed.value)
        filler.unlink()
        # the store is usable again and still holds the live release
        live = store.live("web")
        assert live is not None and live.release == "v1"
        store.close()
        reopened = StateStore.open(state)
        live = reopened.live("web")
        assert live is not None and live.release == "v1"
        reopened.close()


def test_a_corrupt_database_is_refused_as_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(StoreError) as failed:
        StateStore.open(tmp_path)
    assert failed.value.exit_code == 4
    assert "state store: " in str(failed.value) and "not a database" in str(failed.value)


def test_a_deleted_database_is_noticed_at_the_next_transition_and_logged_once(
    tmp_path: Path,
) -> None:
    store = StateStore.open(tmp_path)
    store.set_live("web", 0, "v1")
    assert store.check_file() is None
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    seen: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("nonstop")
    logger.addHandler(handler)
    try:
        store.set_live("web", 1, "v2")
        store.set_live("web", 0, "v3")
    finally:
        logger.removeHandler(handler)
    problems = [message for message in seen if "state store" in message]
    assert len(problems) == 1
    assert "state.db was deleted while nonstop ran" in problems[0]
    assert store.check_file() is not None
    store.close()


def test_a_replaced_database_is_noticed(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    other = StateStore(tmp_path / "other.db")
    other.close()
    (tmp_path / "other.db").replace(tmp_path / "state.db")
    store.set_live("web", 0, "v1")
    problem = store.check_file()
    assert problem is not None and "was replaced by another file" in problem
    store.close()
