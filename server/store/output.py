"""Reading and appending a record's output chunks."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from server.store.tables import OUTPUT_CHUNKS


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


def append_chunks(conn: Connection, chunks: list[tuple[str, int, bytes]]) -> None:
    """Stores (record_id, offset, data) chunks; the caller has checked they extend the output."""
    if chunks:
        conn.execute(
            insert(OUTPUT_CHUNKS),
            [
                {"record_id": r, "offset": o, "end_offset": o + len(d), "data": d}
                for r, o, d in chunks
            ],
        )
