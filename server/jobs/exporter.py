"""Copies every finished record's whole output to a directory (`--output-dir`) and/or an
S3-compatible bucket (`--output-bucket s3://BUCKET/PREFIX`).

INVOKE_ID/INSTANCE_ID/RECORD_ID.out holds the output byte for byte, and RECORD_ID.json the
record's state, exit code, error code, dropped bytes and times. A file is written to a
temporary name and renamed, an object is put whole, so a reader never sees half of one; a
copy interrupted by a crash is made again. With several servers, give them one shared
directory (a bucket is shared anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from cloudassist.common.clock import now_ms
from cloudassist.server.store.database import Database
from cloudassist.server.store.exports import FinishedRecord, finished_undelivered, mark_delivered

log = logging.getLogger(__name__)

BATCH = 20


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def summary_of(record: FinishedRecord) -> bytes:
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
    return json.dumps(summary).encode()


class Destination(Protocol):
    def write(self, record: FinishedRecord) -> None:
        """Stores one record's output and summary (blocking: called from a thread)."""


class DirectoryDestination:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, record: FinishedRecord) -> None:
        folder = self.directory / record.invoke_id / record.instance_id
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / f"{record.record_id}.out", record.output)
        _write_atomically(folder / f"{record.record_id}.json", summary_of(record))


class BucketDestination:
    """An S3-compatible bucket; credentials come the usual AWS ways (environment, config
    files, instance roles)."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"--output-bucket: {url!r} is not s3://BUCKET[/PREFIX]")
        import boto3  # only when a bucket is configured

        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, record: FinishedRecord, suffix: str) -> str:
        key = f"{record.invoke_id}/{record.instance_id}/{record.record_id}{suffix}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def write(self, record: FinishedRecord) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self._key(record, ".out"), Body=record.output
        )
        self._client.put_object(
            Bucket=self.bucket,
            Key=self._key(record, ".json"),
            Body=summary_of(record),
            ContentType="application/json",
        )


class OutputExporter:
    def __init__(
        self,
        db: Database,
        destinations: list[Destination],
        *,
        grace_seconds: float,
        interval_seconds: float = 1.0,
    ) -> None:
        self._db = db
        self._destinations = destinations
        self._grace_ms = int(grace_seconds * 1000)
        self._interval = interval_seconds

    async def export_once(self) -> int:
        """Copies the finished records not yet copied (a batch); returns how many."""
        records = await self._db.read(finished_undelivered, now_ms(), self._grace_ms, BATCH)
        for record in records:
            for destination in self._destinations:
                await asyncio.to_thread(destination.write, record)
        await self._db.write(mark_delivered, [r.record_id for r in records])
        return len(records)

    async def run(self) -> None:
        while True:
            try:
                if await self.export_once() == BATCH:
                    continue  # more are waiting
            except Exception:
                log.exception("copying output failed; retrying")
            await asyncio.sleep(self._interval)
