"""Unfinished large transfers, recorded as they progress so a restart resumes them.

An upload row names the service's upload id and the local file it was started from (size,
mtime, inode: if any differs, the upload is stale); each finished part is added as it
completes. A download row names the object version, the temp file it is written into, and the
chunks already in it. Rows are dropped when the transfer completes, is aborted, or goes stale.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select

from syncd.state import schema
from syncd.state.store import StateStore


@dataclass(frozen=True, slots=True)
class RecordedPart:
    number: int
    offset: int
    size: int
    token: str = ""
    md5: str | None = None


@dataclass(frozen=True, slots=True)
class PartialUpload:
    path: str
    key: str
    upload_id: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    part_size: int
    #: "absent" (create-only) or "match:<etag>": an upload is only resumed on the same terms.
    condition: str
    started_at: float = field(default_factory=time.time)
    parts: tuple[RecordedPart, ...] = ()


@dataclass(frozen=True, slots=True)
class PartialDownload:
    path: str
    key: str
    etag: str
    size: int
    temp: str  # the temp file's name, a sibling of the target
    chunk_size: int
    started_at: float = field(default_factory=time.time)
    chunks: frozenset[int] = frozenset()  # indexes of the chunks already written and fsynced


def _parts_json(parts: tuple[RecordedPart, ...]) -> str:
    return json.dumps([[p.number, p.offset, p.size, p.token, p.md5] for p in parts])


def _parts(text: str) -> tuple[RecordedPart, ...]:
    return tuple(RecordedPart(*row) for row in json.loads(text or "[]"))


class Partials:
    """The `uploads` and `downloads` tables of a StateStore."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- uploads ---------------------------------------------------------------------------
    def upload(self, pair: str, path: str) -> PartialUpload | None:
        table = schema.uploads
        with self.store.reading() as conn:
            row = conn.execute(
                select(table).where(table.c.pair == pair, table.c.path == path)
            ).first()
        return _upload(row._mapping) if row is not None else None

    def uploads(self, pair: str) -> list[PartialUpload]:
        table = schema.uploads
        with self.store.reading() as conn:
            return [
                _upload(r._mapping) for r in conn.execute(select(table).where(table.c.pair == pair))
            ]

    def start_upload(self, pair: str, record: PartialUpload) -> None:
        """Record a new upload (replacing any older row of the path)."""
        table = schema.uploads
        with self.store.writing() as conn:
            conn.execute(delete(table).where(table.c.pair == pair, table.c.path == record.path))
            conn.execute(
                table.insert().values(
                    pair=pair,
                    path=record.path,
                    key=record.key,
                    upload_id=record.upload_id,
                    size=record.size,
                    mtime_ns=record.mtime_ns,
                    inode=record.inode,
                    sha256=record.sha256,
                    part_size=record.part_size,
                    condition=record.condition,
                    started_at=record.started_at,
                    parts=_parts_json(record.parts),
                )
            )

    def add_part(self, pair: str, path: str, upload_id: str, part: RecordedPart) -> None:
        """Remember one finished part (read-modify-write under the store's write lock)."""
        table = schema.uploads
        where = (table.c.pair == pair, table.c.path == path, table.c.upload_id == upload_id)
        with self.store.writing() as conn:
            found = conn.execute(select(table.c.parts).where(*where)).scalar_one_or_none()
            if found is None:
                return  # dropped meanwhile (stale, aborted): nothing to add to
            parts = {p.number: p for p in _parts(found)}
            parts[part.number] = part
            ordered = tuple(parts[n] for n in sorted(parts))
            conn.execute(table.update().where(*where).values(parts=_parts_json(ordered)))

    def drop_upload(self, pair: str, path: str) -> None:
        table = schema.uploads
        with self.store.writing() as conn:
            conn.execute(delete(table).where(table.c.pair == pair, table.c.path == path))

    # -- downloads -------------------------------------------------------------------------
    def download(self, pair: str, path: str) -> PartialDownload | None:
        table = schema.downloads
        with self.store.reading() as conn:
            row = conn.execute(
                select(table).where(table.c.pair == pair, table.c.path == path)
            ).first()
        return _download(row._mapping) if row is not None else None

    def downloads(self, pair: str) -> list[PartialDownload]:
        table = schema.downloads
        with self.store.reading() as conn:
            rows = conn.execute(select(table).where(table.c.pair == pair))
            return [_download(r._mapping) for r in rows]

    def start_download(self, pair: str, record: PartialDownload) -> None:
        table = schema.downloads
        with self.store.writing() as conn:
            conn.execute(delete(table).where(table.c.pair == pair, table.c.path == record.path))
            conn.execute(
                table.insert().values(
                    pair=pair,
                    path=record.path,
                    key=record.key,
                    etag=record.etag,
                    size=record.size,
                    temp=record.temp,
                    chunk_size=record.chunk_size,
                    started_at=record.started_at,
                    chunks=json.dumps(sorted(record.chunks)),
                )
            )

    def add_chunk(self, pair: str, path: str, temp: str, index: int) -> None:
        table = schema.downloads
        where = (table.c.pair == pair, table.c.path == path, table.c.temp == temp)
        with self.store.writing() as conn:
            found = conn.execute(select(table.c.chunks).where(*where)).scalar_one_or_none()
            if found is None:
                return
            chunks = set(json.loads(found or "[]"))
            chunks.add(index)
            conn.execute(table.update().where(*where).values(chunks=json.dumps(sorted(chunks))))

    def drop_download(self, pair: str, path: str) -> None:
        table = schema.downloads
        with self.store.writing() as conn:
            conn.execute(delete(table).where(table.c.pair == pair, table.c.path == path))


def _upload(row: object) -> PartialUpload:
    r = dict(row)  # type: ignore[call-overload]
    return PartialUpload(
        path=r["path"],
        key=r["key"],
        upload_id=r["upload_id"],
        size=r["size"],
        mtime_ns=r["mtime_ns"],
        inode=r["inode"],
        sha256=r["sha256"],
        part_size=r["part_size"],
        condition=r["condition"],
        started_at=r["started_at"],
        parts=_parts(r["parts"]),
    )


def _download(row: object) -> PartialDownload:
    r = dict(row)  # type: ignore[call-overload]
    return PartialDownload(
        path=r["path"],
        key=r["key"],
        etag=r["etag"],
        size=r["size"],
        temp=r["temp"],
        chunk_size=r["chunk_size"],
        started_at=r["started_at"],
        chunks=frozenset(json.loads(r["chunks"] or "[]")),
    )
