"""The agent: its state directory, its tasks, and its connection to the server, wired together.

`Connection` (connection.py) keeps the stream open and resumed, `TaskMap` (tasks.py) holds and
runs the tasks, `Uploader` (uploader.py) sends what they produce, `wire` encodes both protocols.
Everything the server has not acknowledged stays in the spool and is sent again on the next
connection.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudassist.agent import wire
from cloudassist.agent.config import AgentConfig
from cloudassist.agent.connection import Connection, Outbox, RegistrationError
from cloudassist.agent.spool import Credentials, Spool
from cloudassist.agent.tasks import TaskMap
from cloudassist.agent.uploader import Uploader

__all__ = ["Agent", "RegistrationError"]

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        # The one I/O thread: the journal, scripts, credentials.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="spool-io")
        self.spool = Spool(config.state_dir, self._io)
        # Read once: a boot id cannot change while the agent runs.
        self.boot_id = _boot_id(config.boot_id_file)
        self.powershell = _powershell(config.powershell)
        self.connection = Connection(
            config,
            self.spool.credentials(),
            self._save_credentials,
            self,
            boot_id=self.boot_id,
            powershell=bool(self.powershell),
        )
        self.tasks = TaskMap(
            config, self.spool, self._io, self.powershell, lambda: self.connection.instance_id
        )
        self._uploader = Uploader(self.tasks, self.spool)

    @property
    def instance_id(self) -> str:
        return self.connection.instance_id

    async def run(self) -> None:
        await self.connection.register()
        await self.tasks.recover()
        await self.connection.run()
        await self.tasks.shutdown()
        await self.spool.close()
        self._io.shutdown(wait=True)

    def stop(self) -> None:
        self.connection.stop()

    async def _save_credentials(self, credentials: Credentials) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self.spool.save_credentials, credentials)

    # What the connection serves (connection.Peer) -----------------------------------------

    def progress(self) -> list[wire.Progress]:
        return self.tasks.progress()

    def welcomed(self, acks: dict[str, wire.Ack]) -> None:
        self.tasks.welcomed(acks)

    def apply(self, order: wire.Order) -> None:
        self.tasks.apply(order)

    async def upload(self, outbox: Outbox, protocol: int) -> None:
        await self._uploader.run(outbox, protocol)


def _powershell(pwsh: str) -> str:
    """The pwsh to run PowerShell scripts with, if one is configured and present."""
    if pwsh and shutil.which(pwsh) is None:
        log.warning("--powershell %s: not found; PowerShell scripts will not run here", pwsh)
        return ""
    return pwsh


def _boot_id(path: Path) -> str:
    """This boot's id, or "" where the system does not say (reboot modes never fire then)."""
    try:
        return path.read_text().strip()[:64]
    except OSError:
        log.warning("no boot id in %s: reboot-mode invocations will not run here", path)
        return ""
