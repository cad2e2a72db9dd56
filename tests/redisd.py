"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir.

No persistence by default (``--save '' --appendonly no``); ``durable=True`` turns on
the append-only file with an fsync per write, for tests that restart Redis and expect
what it acknowledged to be there afterwards (as an operator would configure it).
"""

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.directory = directory
        self.durable = durable
        self.port = _free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        return [
            REDIS_SERVER,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no", *persistence),
            *("--daemonize", "no", "--loglevel", "warning", "--protected-mode", "no"),
        ]

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            *self.argv(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        client = aioredis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    await client.ping()
                    return
                except (RedisError, OSError):
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        raise AssertionError("redis-server did not start")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def _run_with_redis(command: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="m3u-redis-") as directory:
        server = RedisServer(Path(directory))
        await server.start()
        try:
            child = await asyncio.create_subprocess_exec(
                *command, env={**os.environ, "REDIS_URL": server.url}
            )
            return await child.wait()
        finally:
            await server.stop()


if __name__ == "__main__":
    # `python -m tests.redisd pytest ...`: the command on a throwaway Redis (make pytest-redis).
    sys.exit(asyncio.run(_run_with_redis(sys.argv[1:] or ["pytest"])))
