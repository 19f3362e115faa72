"""A TCP proxy for fault injection: python tcp_proxy.py LISTEN_PORT TARGET_PORT [IDLE_SECONDS]
(loopback). With IDLE_SECONDS it cuts a connection that carried no byte either way for that
long, as load balancers do; it prints a line for every connection it accepts and cuts."""

from __future__ import annotations

import asyncio
import contextlib
import sys


class Activity:
    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity
) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            activity.touch()
            writer.write(data)
            await writer.drain()
    writer.close()


async def cut_when_idle(
    idle_seconds: float, activity: Activity, writers: list[asyncio.StreamWriter]
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(idle_seconds / 10)
        if loop.time() - activity.last > idle_seconds:
            print("cut idle connection", flush=True)
            for writer in writers:
                writer.transport.abort()
            return


async def main(listen_port: int, target_port: int, idle_seconds: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        print("accepted connection", flush=True)
        activity = Activity()
        pipes = asyncio.gather(
            pipe(client_r, server_w, activity), pipe(server_r, client_w, activity)
        )
        if not idle_seconds:
            await pipes
            return
        watchdog = asyncio.create_task(cut_when_idle(idle_seconds, activity, [client_w, server_w]))
        try:
            await pipes
        finally:
            watchdog.cancel()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), idle))
