"""Reading and appending a record's output chunks."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, insert, or_, select

from cloudassist.server.store.statements import in_list, in_values
from cloudassist.server.store.tables import OUTPUT_CHUNKS


def read_range(conn: Connection, record_id: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a record's stored output (shorter if less is stored)."""
    if end <= start:
        return b""
    rows = conn.execute(
        select(OUTPUT_CHUNKS.c.offset, OUTPUT_CHUNKS.c.data)
        .where(
            OUTPUT_CHUNKS.c.record_id == record_id,
            OUTPUT_CHUNKS.c.end_offset > start,
            OUTPUT_CHUNKS.c.offset < end,
        )
        .order_by(OUTPUT_CHUNKS.c.offset)
    ).all()
    parts = []
    for offset, data in rows:
        chunk = bytes(data)
        parts.append(chunk[max(0, start - offset) : end - offset])
    return b"".join(parts)


# Records per statement of read_ranges: keeps the statement well under SQLite's expression
# depth and parameter limits.
RANGES_PER_READ = 100


@lru_cache(maxsize=RANGES_PER_READ)
def _from_start(count: int) -> Select[Any]:
    """The output of `count` records read from their start, built once per count."""
    return (
        select(OUTPUT_CHUNKS.c.record_id, OUTPUT_CHUNKS.c.offset, OUTPUT_CHUNKS.c.data)
        .where(
            in_list(OUTPUT_CHUNKS.c.record_id, "record_id", count),
            OUTPUT_CHUNKS.c.offset < bindparam("below"),
        )
        .order_by(OUTPUT_CHUNKS.c.record_id, OUTPUT_CHUNKS.c.offset)
    )


def read_ranges(conn: Connection, ranges: Mapping[str, tuple[int, int]]) -> dict[str, bytes]:
    """Bytes [start, end) of many records' output, {record_id: (start, end)}, read in one
    statement per RANGES_PER_READ records rather than one per record (a watcher of a
    50-instance invocation looks at 50 records at once). Records read from offset 0 (the
    usual case: a quick task's whole output) share a statement built once per count."""
    wanted = [(r, s, e) for r, (s, e) in ranges.items() if e > s]
    parts: dict[str, list[bytes]] = {r: [] for r, _, _ in wanted}
    from_start = {r: e for r, s, e in wanted if s == 0}
    for first in range(0, len(from_start), RANGES_PER_READ):
        ids = list(from_start)[first : first + RANGES_PER_READ]
        below = max(from_start[r] for r in ids)
        for record_id, offset, data in conn.execute(
            _from_start(len(ids)), {**in_values("record_id", ids), "below": below}
        ).all():
            end = from_start[record_id]
            if offset < end:
                parts[record_id].append(bytes(data)[: end - offset])
    wanted = [w for w in wanted if w[1] != 0]
    for first in range(0, len(wanted), RANGES_PER_READ):
        group = wanted[first : first + RANGES_PER_READ]
        rows = conn.execute(
            select(OUTPUT_CHUNKS.c.record_id, OUTPUT_CHUNKS.c.offset, OUTPUT_CHUNKS.c.data)
            .where(
                or_(
                    *(
                        and_(
                            OUTPUT_CHUNKS.c.record_id == r,
                            OUTPUT_CHUNKS.c.end_offset > s,
                            OUTPUT_CHUNKS.c.offset < e,
                        )
                        for r, s, e in group
                    )
                )
            )
            .order_by(OUTPUT_CHUNKS.c.record_id, OUTPUT_CHUNKS.c.offset)
        ).all()
        bounds = {r: (s, e) for r, s, e in group}
        for record_id, offset, data in rows:
            start, end = bounds[record_id]
            chunk = bytes(data)
            parts[record_id].append(chunk[max(0, start - offset) : end - offset])
    return {r: b"".join(p) for r, p in parts.items()}


_INSERT_CHUNKS = insert(OUTPUT_CHUNKS)


def append_chunks(conn: Connection, chunks: list[tuple[str, int, bytes]]) -> None:
    """Stores (record_id, offset, data) chunks; the caller has checked they extend the output."""
    if chunks:
        conn.execute(
            _INSERT_CHUNKS,
            [
                {"record_id": r, "offset": o, "end_offset": o + len(d), "data": d}
                for r, o, d in chunks
            ],
        )
