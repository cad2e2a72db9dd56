"""The embedded `Store`: JSON documents in one SQLite file under the data dir.

One instance owns the file, so `watch` has nothing to report (no other writer).

SQLite runs in WAL mode on one dedicated thread, so no call blocks the event loop and
the connection is never shared between threads. A write returns only after COMMIT, so
a ``kill -9`` right after the API answered loses nothing (``synchronous=NORMAL`` in WAL
mode is durable against process crashes; only a power cut can lose the last commits).
"""

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from m3u_proxy.errors import StoreError
from m3u_proxy.store.base import Doc, Listener

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID
"""


class SqliteStore:
    """`Store` on a SQLite file; open it with `SqliteStore.open(path)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> "SqliteStore":
        store = cls(path)
        await store._run(store._connect)
        return store

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # Shielded: once a write is handed to the thread it completes even if the
        # request that asked for it is cancelled (client gone), so memory and disk agree.
        return await asyncio.shield(loop.run_in_executor(self._executor, func, *args))

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.execute("SELECT count(*) FROM documents").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def _load(self, kind: str) -> dict[str, Doc]:
        try:
            rows = (
                self._db()
                .execute("SELECT key, body FROM documents WHERE kind = ?", (kind,))
                .fetchall()
            )
            return {key: json.loads(body) for key, body in rows}
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"cannot read {kind} from {self.path}: {exc}") from exc

    def _get_many(self, kind: str, keys: list[str]) -> dict[str, Doc]:
        found: dict[str, Doc] = {}
        try:
            for key in keys:
                row = (
                    self._db()
                    .execute("SELECT body FROM documents WHERE kind = ? AND key = ?", (kind, key))
                    .fetchone()
                )
                if row is not None:
                    found[key] = json.loads(row[0])
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"cannot read {kind} from {self.path}: {exc}") from exc
        return found

    def _setdefault(self, kind: str, key: str, doc: Doc) -> Doc:
        db = self._db()
        try:
            db.execute(
                "INSERT INTO documents (kind, key, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (kind, key, json.dumps(doc, separators=(",", ":"))),
            )
            row = db.execute(
                "SELECT body FROM documents WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            stored: Doc = json.loads(row[0])
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from exc
        return stored

    def _write(self, kind: str, docs: Mapping[str, Doc], deletes: Iterable[str]) -> None:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO documents (kind, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
                [(kind, key, json.dumps(doc, separators=(",", ":"))) for key, doc in docs.items()],
            )
            db.executemany(
                "DELETE FROM documents WHERE kind = ? AND key = ?", [(kind, k) for k in deletes]
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot write to {self.path}: {exc}") from exc

    async def load(self, kind: str) -> dict[str, Doc]:
        return await self._run(self._load, kind)

    async def get_many(self, kind: str, keys: Iterable[str]) -> dict[str, Doc]:
        return await self._run(self._get_many, kind, list(keys))

    async def setdefault(self, kind: str, key: str, doc: Doc) -> Doc:
        return await self._run(self._setdefault, kind, key, doc)

    def watch(self, kind: str, listener: Listener) -> None:
        """Nothing to watch: this process is the only writer of its file."""

    async def put(self, kind: str, key: str, doc: Doc) -> None:
        await self._run(self._write, kind, {key: doc}, ())

    async def put_many(self, kind: str, docs: Mapping[str, Doc]) -> None:
        await self._run(self._write, kind, dict(docs), ())

    async def delete(self, kind: str, keys: Iterable[str]) -> None:
        await self._run(self._write, kind, {}, list(keys))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        """Close the file; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._close)
        self._executor.shutdown(wait=True)
