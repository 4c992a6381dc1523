"""Tables of the state database. Bump SCHEMA_VERSION and add a migration step when they change."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 4


@dataclass(frozen=True)
class AddColumn:
    """A migration step that adds a column, skipped when the column is there already: SQLite
    has no `ADD COLUMN IF NOT EXISTS`, and a step run twice (a migration cut short, say) must
    not make the database one that no syncd can open ("duplicate column name")."""

    table: str
    column: str
    definition: str

    @property
    def sql(self) -> str:
        return f"ALTER TABLE {self.table} ADD COLUMN {self.column} {self.definition}"


#: Ordered steps that bring an older database up to SCHEMA_VERSION: MIGRATIONS[v] upgrades
#: version v to v + 1. New tables need no step (create_all adds them). Every step must be
#: safe to run again on a database it already changed (`IF NOT EXISTS`, `AddColumn`).
MIGRATIONS: dict[int, list[str | AddColumn]] = {
    1: [AddColumn("files", "ctime_ns", "BIGINT NOT NULL DEFAULT 0")],
    2: [],  # the uploads, downloads and counters tables (created by create_all)
    3: ["CREATE INDEX IF NOT EXISTS files_content ON files (pair, sha256, size)"],
}

metadata = MetaData()

#: One row a schema fact (`schema_version`, …): what a newer or older syncd checks before use.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

#: The base of the three-way comparison: what both sides held the last time a path was in sync.
files = Table(
    "files",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=False, default=0),
    Column("ctime_ns", BigInteger, nullable=False, default=0),
    Column("sha256", String(64), nullable=True),
    Column("remote_etag", Text, nullable=True),
    Column("remote_version", Text, nullable=True),
    Column("synced_at", Float, nullable=False),
)

Index("files_size", files.c.pair, files.c.size)
#: A move's source is looked up by content: without this, every new file of a common size
#: scanned every synced file of that size (quadratic in a tree of same-size files).
Index("files_content", files.c.pair, files.c.sha256, files.c.size)

#: Conflicts waiting for a person (the `manual` strategy): what `syncd conflicts` lists.
conflicts = Table(
    "conflicts",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("detected_at", Float, nullable=False),
)

#: What was done, when, and how it went: the audit trail behind `last_error` and the logs.
oplog = Table(
    "oplog",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("pair", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("op", String(32), nullable=False),
    Column("size", BigInteger, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("result", String(16), nullable=False),
    Column("error", Text, nullable=True),
)
Index("oplog_pair_ts", oplog.c.pair, oplog.c.ts)

#: Unfinished large uploads, resumed after a restart (see syncd/state/partials.py).
uploads = Table(
    "uploads",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("key", Text, nullable=False),
    Column("upload_id", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("part_size", BigInteger, nullable=False),
    Column("condition", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("parts", Text, nullable=False),  # JSON: [[number, offset, size, token, md5], ...]
)

#: Unfinished large downloads: the version, its temp file and the chunks already in it.
downloads = Table(
    "downloads",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("key", Text, nullable=False),
    Column("etag", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("temp", Text, nullable=False),
    Column("chunk_size", BigInteger, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("chunks", Text, nullable=False),  # JSON: sorted chunk indexes
)

#: Running totals since the state was created ("since install"): files and bytes per direction,
#: failures, conflicts settled per strategy. One row per (pair, name).
counters = Table(
    "counters",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: Each pair's writer id: a random word its uploads carry in their `syncdorigin` metadata, so
#: an object it wrote can be told from another writer's (see syncd/engine/origin.py). Made
#: with the pair's first state, dropped when the pair's state is forgotten (`state rebuild`).
#: A new table needs no migration step (create_all adds it) and an older syncd ignores it.
writers = Table(
    "writers",
    metadata,
    Column("pair", String(64), primary_key=True),
    Column("writer", String(64), nullable=False),
)
