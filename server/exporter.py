"""Copies every finished record's whole output to a directory (`--output-dir`).

DIR/INVOKE_ID/INSTANCE_ID/RECORD_ID.out holds the output byte for byte, and RECORD_ID.json
the record's state, exit code, error code, dropped bytes and times. Each file is written to a
temporary name and renamed, so a reader never sees half a file; a copy interrupted by a crash
is made again. With several servers, give them one shared directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from server.clock import now_ms
from server.store.database import Database
from server.store.exports import FinishedRecord, finished_undelivered, mark_delivered

log = logging.getLogger(__name__)

BATCH = 20


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def write_record(directory: Path, record: FinishedRecord) -> None:
    """Writes one record's files (blocking: call it from a thread)."""
    folder = directory / record.invoke_id / record.instance_id
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / f"{record.record_id}.out", record.output)
    summary = {
        "record_id": record.record_id,
        "invoke_id": record.invoke_id,
        "instance_id": record.instance_id,
        "region_id": record.region_id,
        "command_id": record.command_id,
        "state": record.state,
        "exit_code": record.exit_code,
        "error_code": record.error_code,
        "output_size": len(record.output),
        "dropped": record.dropped,
        "start_ms": record.start_ms,
        "finish_ms": record.finish_ms,
    }
    _write_atomically(folder / f"{record.record_id}.json", json.dumps(summary).encode())


class OutputExporter:
    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        grace_seconds: float,
        interval_seconds: float = 1.0,
    ) -> None:
        self._db = db
        self._directory = directory
        self._grace_ms = int(grace_seconds * 1000)
        self._interval = interval_seconds

    async def export_once(self) -> int:
        """Copies the finished records not yet copied (a batch); returns how many."""
        records = await self._db.read(finished_undelivered, now_ms(), self._grace_ms, BATCH)
        for record in records:
            await asyncio.to_thread(write_record, self._directory, record)
        await self._db.write(mark_delivered, [r.record_id for r in records])
        return len(records)

    async def run(self) -> None:
        await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)
        while True:
            try:
                if await self.export_once() == BATCH:
                    continue  # more are waiting
            except Exception:
                log.exception("copying output to %s failed; retrying", self._directory)
            await asyncio.sleep(self._interval)
