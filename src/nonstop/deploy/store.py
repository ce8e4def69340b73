"""nonstop's state: releases, instances, the live slot, deploy history and deploy locks.

SQLite under ``state_dir/state.db`` in WAL mode: readers (``nonstop status``) never block
the daemon's writes, and a crash loses at most the transition being written — each
transition is one ``BEGIN IMMEDIATE`` transaction, so the file always holds a state that
really existed.  Writes are a few rows on a local file; they run on the event loop thread
and take well under a millisecond with ``synchronous=NORMAL``.

Times are wall-clock seconds from the clock port (they are read by people).  ``slot`` is
0 for blue (``ports[0::2]``) and 1 for green (``ports[1::2]``).

A deploy holds its app's lock row from ``begin_deploy`` to ``finish_deploy``; a second
deployer gets ``DeployLocked`` naming the holder.  A deploy still ``running`` when the
daemon starts was cut short by a crash: ``resolve_interrupted`` marks it ``interrupted``
and frees its lock.

Every failure of the database — a full disk, a read-only or corrupt file — surfaces as
``StoreError`` ("state store: <reason>", exit code 4), translated here at the one place
that meets ``sqlite3``, so callers can tell "the state could not be written" from every
other failure.  A ``state.db`` deleted or replaced under the running daemon is noticed
at the next transition and logged: SQLite would go on writing to the unlinked file, and
the next start would find none of it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.errors import DeployFailed, NonstopError
from nonstop.statedir import claim

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "DeployLocked",
    "DeployRecord",
    "InstanceRecord",
    "LiveRecord",
    "LockInfo",
    "StateStore",
    "StoreError",
]

SCHEMA_VERSION = 2
OUTCOMES = ("running", "ok", "refused", "rolled_back", "failed", "interrupted")
INSTANCE_STATES = ("starting", "running", "draining", "stopping", "stopped", "crashed", "failed")

_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE releases (
    app TEXT NOT NULL,
    release TEXT NOT NULL,
    first_started_at REAL NOT NULL,
    last_live_at REAL,
    PRIMARY KEY (app, release)
);
CREATE TABLE instances (
    app TEXT NOT NULL,
    port INTEGER NOT NULL,
    slot INTEGER NOT NULL CHECK (slot IN (0, 1)),
    release TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    started_at REAL NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app, port)
);
CREATE TABLE live (
    app TEXT PRIMARY KEY,
    slot INTEGER NOT NULL CHECK (slot IN (0, 1)),
    release TEXT NOT NULL,
    since REAL NOT NULL,
    previous_slot INTEGER,
    previous_release TEXT
);
CREATE TABLE deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    release TEXT NOT NULL,
    from_release TEXT,
    holder TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    durations TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX deploys_by_app ON deploys (app, id);
CREATE TABLE locks (
    app TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    deploy_id INTEGER NOT NULL REFERENCES deploys (id)
);
"""

# Index i upgrades schema version i+1 to i+2; append, never edit.
_MIGRATIONS: tuple[str, ...] = (
    # 2: an instance's command line, with its pid and start time what a restarted daemon
    # compares before it adopts the process (docs/operations.md)
    "ALTER TABLE instances ADD COLUMN cmdline TEXT",
)

log = logging.getLogger("nonstop")


class StoreError(NonstopError):
    """The state database cannot be used (full disk, read-only, corrupt, from a newer
    nonstop); what serves goes on serving."""

    exit_code = 4

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"state store: {reason}")


class _Rows:
    """A cursor whose reads raise ``StoreError`` instead of ``sqlite3.Error``."""

    __slots__ = ("_cursor", "_path")

    def __init__(self, cursor: sqlite3.Cursor, path: Path) -> None:
        self._cursor = cursor
        self._path = path

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from None

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from None

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class _Database:
    """The SQLite connection, with every error translated at this boundary."""

    __slots__ = ("_db", "_path")

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def execute(self, sql: str, parameters: Any = ()) -> _Rows:
        try:
            return _Rows(self._db.execute(sql, parameters), self._path)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from None

    def close(self) -> None:
        self._db.close()


def _when(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class LockInfo:
    app: str
    holder: str
    pid: int
    started_at: float
    deploy_id: int

    def describe(self) -> str:
        return (
            f"lock held by {self.holder} (pid {self.pid}, deploy #{self.deploy_id}) "
            f"since {_when(self.started_at)}"
        )


class DeployLocked(DeployFailed):
    """Another deploy of the same app is running."""

    def __init__(self, lock: LockInfo) -> None:
        self.lock = lock
        super().__init__(f"a deploy of {lock.app} is already in progress: {lock.describe()}")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    app: str
    port: int
    slot: int
    release: str
    pid: int | None
    pid_start: int | None  # process start time, to recognise the pid after a daemon crash
    started_at: float
    state: str
    updated_at: float
    cmdline: str | None = None  # /proc/PID/cmdline, NUL-separated, as last seen running


@dataclass(frozen=True, slots=True)
class LiveRecord:
    app: str
    slot: int
    release: str
    since: float
    previous_slot: int | None
    previous_release: str | None


@dataclass(frozen=True, slots=True)
class DeployRecord:
    id: int
    app: str
    kind: str  # deploy | rollback
    release: str
    from_release: str | None
    holder: str
    started_at: float
    finished_at: float | None
    outcome: str
    reason: str
    durations: Mapping[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class StateStore:
    """Pure SQL behind a few methods; one instance per daemon, used on its loop thread."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.clock = clock
        self._depth = 0
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        connection.row_factory = sqlite3.Row
        self._db = _Database(connection, self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")  # the file exists from here on
        for path in (self.path, f"{self.path}-wal", f"{self.path}-shm"):
            claim(str(path))  # 0600, or 0640 with the config's group
        self._identity = self._file_identity()
        self.file_problem: str | None = None  # set once the file is gone or replaced
        self._migrate()

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], clock: Clock = SYSTEM_CLOCK) -> StateStore:
        """``state_dir/state.db``, creating the directory."""
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        return cls(Path(state_dir) / "state.db", clock)

    def close(self) -> None:
        self._db.close()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_file(self) -> str | None:
        """Whether ``state.db`` is still the file this store writes; logged once if not."""
        if self.file_problem is None:
            identity = self._file_identity()
            if identity != self._identity:
                self.file_problem = (
                    f"{self.path} was deleted"
                    if identity is None
                    else f"{self.path} was replaced by another file"
                ) + (
                    " while nonstop ran: what it records now is lost at its next start; "
                    "serving goes on"
                )
                log.error("state store: %s", self.file_problem)
        return self.file_problem

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Database]:
        """One atomic transition; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self.check_file()
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            with contextlib.suppress(StoreError):  # the failure itself is what counts
                self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    def schema_version(self) -> int:
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self.transaction() as db:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if not exists:
                self._create(db)
                return
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this nonstop knows up to "
                    f"{SCHEMA_VERSION} (it was written by a newer nonstop)"
                )
            for script in _MIGRATIONS[version - 1 :]:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @staticmethod
    def _create(db: _Database) -> None:
        for statement in [*_SCHEMA_V1.split(";"), *_MIGRATIONS]:
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    # -- instances ------------------------------------------------------------------------

    def record_instance(
        self,
        app: str,
        slot: int,
        port: int,
        release: str,
        pid: int | None,
        pid_start: int | None = None,
        state: str = "starting",
        cmdline: str | None = None,
    ) -> InstanceRecord:
        """A process started on ``port``: it replaces whatever was recorded there."""
        _check(state, INSTANCE_STATES, "instance state")
        now = self.clock.wall()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO instances (app, port, slot, release, pid, pid_start,"
                " started_at, state, updated_at, cmdline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app, port, slot, release, pid, pid_start, now, state, now, cmdline),
            )
            db.execute(
                "INSERT OR IGNORE INTO releases (app, release, first_started_at) VALUES (?, ?, ?)",
                (app, release, now),
            )
        record = self.instance(app, port)
        assert record is not None
        return record

    def set_instance_state(
        self, app: str, port: int, state: str, cmdline: str | None = None
    ) -> None:
        """``cmdline``: the process's command line now (an app may exec or rename itself
        after it starts), kept for recognising it after a restart of nonstop."""
        _check(state, INSTANCE_STATES, "instance state")
        with self.transaction() as db:
            db.execute(
                "UPDATE instances SET state = ?, updated_at = ?, cmdline = coalesce(?, cmdline)"
                " WHERE app = ? AND port = ?",
                (state, self.clock.wall(), cmdline, app, port),
            )

    def forget_instance(self, app: str, port: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM instances WHERE app = ? AND port = ?", (app, port))

    def instance(self, app: str, port: int) -> InstanceRecord | None:
        row = self._db.execute(
            "SELECT * FROM instances WHERE app = ? AND port = ?", (app, port)
        ).fetchone()
        return InstanceRecord(**dict(row)) if row else None

    def instances(self, app: str | None = None) -> list[InstanceRecord]:
        rows = self._db.execute(
            "SELECT * FROM instances WHERE ? IS NULL OR app = ? ORDER BY app, port", (app, app)
        ).fetchall()
        return [InstanceRecord(**dict(row)) for row in rows]

    # -- live slot ------------------------------------------------------------------------

    def set_live(self, app: str, slot: int, release: str) -> LiveRecord:
        """``release`` on ``slot`` now serves ``app``; the one before becomes ``previous``.

        Setting what is already live (a restore on daemon start) keeps ``previous``.
        """
        now = self.clock.wall()
        with self.transaction() as db:
            old = self.live(app)
            previous: tuple[int | None, str | None] = (None, None)
            if old is not None and (old.slot, old.release) == (slot, release):
                previous = (old.previous_slot, old.previous_release)
            elif old is not None:
                previous = (old.slot, old.release)
            db.execute(
                "INSERT OR REPLACE INTO live (app, slot, release, since, previous_slot,"
                " previous_release) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    app,
                    slot,
                    release,
                    now,
                    *previous,
                ),
            )
            db.execute(
                "INSERT INTO releases (app, release, first_started_at, last_live_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (app, release) DO UPDATE SET last_live_at = ?",
                (app, release, now, now, now),
            )
        record = self.live(app)
        assert record is not None
        return record

    def live(self, app: str) -> LiveRecord | None:
        row = self._db.execute("SELECT * FROM live WHERE app = ?", (app,)).fetchone()
        return LiveRecord(**dict(row)) if row else None

    def all_live(self) -> list[LiveRecord]:
        rows = self._db.execute("SELECT * FROM live ORDER BY app").fetchall()
        return [LiveRecord(**dict(row)) for row in rows]

    def releases(self, app: str) -> list[tuple[str, float, float | None]]:
        """(release, first started, last live) of every release of ``app``, newest first."""
        rows = self._db.execute(
            "SELECT release, first_started_at, last_live_at FROM releases WHERE app = ?"
            " ORDER BY first_started_at DESC, rowid DESC",
            (app,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- deploys and their lock -----------------------------------------------------------

    def begin_deploy(
        self, app: str, release: str, holder: str, pid: int, kind: str = "deploy"
    ) -> DeployRecord:
        """Take ``app``'s lock and open a ``running`` deploy, in one transaction.

        Raises ``DeployLocked`` (naming the holder) while another deploy holds the lock.
        """
        now = self.clock.wall()
        with self.transaction() as db:
            held = self.lock(app)
            if held is not None:
                raise DeployLocked(held)
            live = self.live(app)
            cursor = db.execute(
                "INSERT INTO deploys (app, kind, release, from_release, holder, started_at,"
                " outcome) VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (app, kind, release, live.release if live else None, holder, now),
            )
            deploy_id = int(cursor.lastrowid or 0)
            db.execute(
                "INSERT INTO locks (app, holder, pid, started_at, deploy_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (app, holder, pid, now, deploy_id),
            )
        record = self.deploy(deploy_id)
        assert record is not None
        return record

    def finish_deploy(
        self,
        deploy_id: int,
        outcome: str,
        reason: str = "",
        durations: Mapping[str, float] | None = None,
        finished_at: float | None = None,
    ) -> DeployRecord:
        """Close a running deploy with its outcome and release its app's lock;
        ``finished_at`` (wall clock) when the deploy ended before this write (a write
        the store refused at first)."""
        _check(outcome, OUTCOMES[1:], "deploy outcome")
        with self.transaction() as db:
            current = self.deploy(deploy_id)
            if current is None:
                raise StoreError(f"no deploy #{deploy_id}")
            if current.outcome != "running":
                raise StoreError(f"deploy #{deploy_id} already finished: {current.outcome}")
            db.execute(
                "UPDATE deploys SET finished_at = ?, outcome = ?, reason = ?, durations = ?"
                " WHERE id = ?",
                (
                    self.clock.wall() if finished_at is None else finished_at,
                    outcome,
                    reason,
                    json.dumps(dict(durations or {})),
                    deploy_id,
                ),
            )
            db.execute("DELETE FROM locks WHERE deploy_id = ?", (deploy_id,))
        record = self.deploy(deploy_id)
        assert record is not None
        return record

    def lock(self, app: str) -> LockInfo | None:
        row = self._db.execute("SELECT * FROM locks WHERE app = ?", (app,)).fetchone()
        return LockInfo(**dict(row)) if row else None

    def deploy(self, deploy_id: int) -> DeployRecord | None:
        row = self._db.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
        return _deploy(row) if row else None

    def history(self, app: str | None = None, limit: int = 10) -> list[DeployRecord]:
        """The latest deploys, newest first."""
        rows = self._db.execute(
            "SELECT * FROM deploys WHERE ? IS NULL OR app = ? ORDER BY id DESC LIMIT ?",
            (app, app, limit),
        ).fetchall()
        return [_deploy(row) for row in rows]

    def resolve_interrupted(
        self, reason: str = "nonstop stopped while the deploy was running"
    ) -> list[DeployRecord]:
        """On daemon start: deploys left ``running`` become ``interrupted``; locks are freed.

        Call it before the daemon accepts admin requests: at that point no deploy of this
        state directory can be running, so every lock row is a leftover.
        """
        now = self.clock.wall()
        with self.transaction() as db:
            ids = [
                int(row[0])
                for row in db.execute("SELECT id FROM deploys WHERE outcome = 'running'").fetchall()
            ]
            db.execute(
                "UPDATE deploys SET outcome = 'interrupted', finished_at = ?, reason = ?"
                " WHERE outcome = 'running'",
                (now, reason),
            )
            db.execute("DELETE FROM locks")
        return [record for i in ids if (record := self.deploy(i)) is not None]


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(allowed)}")


def _deploy(row: sqlite3.Row) -> DeployRecord:
    data: dict[str, Any] = dict(row)
    data["durations"] = json.loads(data["durations"] or "{}")
    return DeployRecord(**data)
