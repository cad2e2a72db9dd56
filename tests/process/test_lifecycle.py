"""The real process: graceful stop on SIGTERM/SIGINT, start-up failures, sd_notify.

Every test here runs ``python -m m3u_proxy`` as a child process on a free loopback port
with its own data directory, talks to it over HTTP and signals it, the way systemd,
Docker or a terminal would. Providers are the in-process fakes of `tests.providers`.
"""

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from m3u_proxy.process.lifecycle import (
    Notifier,
    StartupError,
    listen_error,
    prepare_data_dir,
    watchdog_interval,
)
from tests.conftest import free_port, proxy_argv
from tests.providers import TS_PACKET, Provider

REPO = Path(__file__).resolve().parents[2]
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT]


def child_env(**extra: str) -> dict[str, str]:
    """A clean environment: nothing of the developer's m3u-proxy settings leaks in."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["M3U_PROXY_SHUTDOWN_TIMEOUT"] = "1"
    env.update(extra)
    return env


class ProxyProcess:
    """One ``m3u-proxy`` child process; stdout and stderr go to files in ``workdir``."""

    def __init__(self, argv: Sequence[str], workdir: Path, port: int, env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.port = port
        self.env = env
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.name = uuid.uuid4().hex[:8]

    @property
    def stderr(self) -> str:
        return (self.workdir / f"{self.name}.err").read_text()

    @property
    def stdout(self) -> str:
        return (self.workdir / f"{self.name}.out").read_text()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (
            (self.workdir / f"{self.name}.out").open("wb") as out,
            (self.workdir / f"{self.name}.err").open("wb") as err,
        ):
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=err, env=self.env, cwd=REPO
            )

    async def wait_healthy(self, seconds: float = 15) -> None:
        """Poll /health until it answers 200; fail with the process's stderr if it died."""
        assert self.proc is not None
        async with aiohttp.ClientSession() as session, asyncio.timeout(seconds):
            while True:
                if self.proc.returncode is not None:
                    pytest.fail(f"proxy exited {self.proc.returncode}: {self.stderr}")
                try:
                    async with session.get(f"{self.base_url}/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.02)

    def send(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_exit(self, seconds: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(seconds):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class Launcher:
    """Starts proxy processes for one test and kills whatever is left at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[ProxyProcess] = []

    async def start(
        self,
        *extra: str,
        data_dir: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        healthy: bool = True,
    ) -> ProxyProcess:
        port = free_port() if port is None else port
        data_dir = data_dir or self.tmp_path / "data"
        proxy = ProxyProcess(
            proxy_argv(data_dir, port, *extra), self.tmp_path / "logs", port, env or child_env()
        )
        self.started.append(proxy)
        await proxy.start()
        if healthy:
            await proxy.wait_healthy()
        return proxy

    async def run_to_exit(self, *extra: str, **kwargs: object) -> tuple[int, str]:
        """Start a proxy that is expected to fail; return its status and stderr."""
        proxy = await self.start(*extra, healthy=False, **kwargs)  # type: ignore[arg-type]
        return await proxy.wait_exit(20), proxy.stderr

    async def close(self) -> None:
        for proxy in self.started:
            await proxy.kill()


@pytest.fixture
async def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:
    started = Launcher(tmp_path)
    yield started
    await started.close()


async def register(session: aiohttp.ClientSession, proxy: ProxyProcess, url: str) -> str:
    async with session.post(f"{proxy.base_url}/streams", json={"url": url}) as resp:
        assert resp.status in (200, 201), await resp.text()
        stream_id: str = (await resp.json())["stream_id"]
        return stream_id


async def read_to_end(resp: aiohttp.ClientResponse) -> tuple[int, BaseException | None]:
    """Read a response body until it ends; return (bytes read, how it ended)."""
    total = 0
    try:
        while chunk := await resp.content.read(65_536):
            total += len(chunk)
    except aiohttp.ClientPayloadError as exc:
        return total, exc
    return total, None


class TestGracefulStop:
    @pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
    async def test_idle_server_exits_0_at_once(
        self, launcher: Launcher, signum: signal.Signals
    ) -> None:
        """Without clients the process exits 0 right away, not after shutdown_timeout."""
        proxy = await launcher.start(env=child_env(M3U_PROXY_SHUTDOWN_TIMEOUT="30"))
        proxy.send(signum)
        assert await proxy.wait_exit(10) == 0
        assert proxy.stderr == ""

    @pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
    async def test_live_client_sees_a_clean_end_and_the_provider_is_closed(
        self, launcher: Launcher, signum: signal.Signals
    ) -> None:
        """A playing live client gets a complete (terminated) body and the process exits 0.

        shutdown_timeout is long here: a live stream is ended at once, not waited for,
        so both the client and the provider see the end well before it.
        """
        proxy = await launcher.start(env=child_env(M3U_PROXY_SHUTDOWN_TIMEOUT="30"))
        async with Provider() as provider, aiohttp.ClientSession() as session:
            stream_id = await register(session, proxy, provider.url("/live/x.ts"))
            async with session.get(f"{proxy.base_url}/stream/{stream_id}") as resp:
                assert resp.status == 200
                await resp.content.readexactly(TS_PACKET * 100)
                upstream = provider.requests_to("/live/x.ts")[0]
                proxy.send(signum)
                async with asyncio.timeout(10):
                    read, ended = await read_to_end(resp)
            assert ended is None, f"the body was cut instead of ended: {ended!r}"
            assert read % TS_PACKET == 0
            assert await proxy.wait_exit(10) == 0
            async with asyncio.timeout(5):
                await upstream.wait_socket_closed()
        assert proxy.stderr == ""

    async def test_transfer_still_running_is_cut_at_shutdown_timeout(
        self, launcher: Launcher
    ) -> None:
        """A slow VOD download gets shutdown_timeout to finish, then its connection closes."""
        proxy = await launcher.start(env=child_env(M3U_PROXY_SHUTDOWN_TIMEOUT="1"))
        async with Provider() as provider, aiohttp.ClientSession() as session:
            # 1 MB at 100 kB/s: ten seconds, far longer than the one-second grace period.
            stream_id = await register(
                session, proxy, provider.url("/vod/film.mp4?rate=100000&chunk=10000")
            )
            async with session.get(f"{proxy.base_url}/stream/{stream_id}") as resp:
                assert resp.status == 200
                await resp.content.readexactly(10_000)
                upstream = provider.requests_to("/vod/film.mp4")[0]
                proxy.send(signal.SIGTERM)
                stopped = time.monotonic()
                async with asyncio.timeout(1 + 1):
                    read, ended = await read_to_end(resp)
                # The download ran on during the grace period, then was cut.
                assert isinstance(ended, aiohttp.ClientPayloadError)
                assert 10_000 < read < 1_000_000
                assert time.monotonic() - stopped > 0.5
            assert await proxy.wait_exit(5) == 0
            async with asyncio.timeout(5):
                await upstream.wait_socket_closed()

    async def test_new_connections_are_refused_while_stopping(self, launcher: Launcher) -> None:
        """Once SIGTERM arrived the listening socket is closed, even while streams drain."""
        proxy = await launcher.start(env=child_env(M3U_PROXY_SHUTDOWN_TIMEOUT="2"))
        async with Provider() as provider, aiohttp.ClientSession() as session:
            stream_id = await register(
                session, proxy, provider.url("/vod/film.mp4?rate=100000&chunk=10000")
            )
            async with session.get(f"{proxy.base_url}/stream/{stream_id}") as resp:
                await resp.content.readexactly(10_000)
                proxy.send(signal.SIGTERM)
                await asyncio.sleep(0.3)
                assert proxy.proc is not None
                assert proxy.proc.returncode is None  # still draining the download
                fresh = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=fresh) as other:
                    with pytest.raises(aiohttp.ClientConnectionError):
                        await other.get(f"{proxy.base_url}/health")
            assert await proxy.wait_exit(5) == 0


class TestPersistence:
    async def test_registration_just_before_sigterm_survives_restart(
        self, launcher: Launcher, tmp_path: Path
    ) -> None:
        """A stream registered right before SIGTERM is listed by the next process."""
        url = "http://provider.invalid/live/kept.ts"
        proxy = await launcher.start()
        async with aiohttp.ClientSession() as session:
            stream_id = await register(session, proxy, url)
            proxy.send(signal.SIGTERM)
            assert await proxy.wait_exit(10) == 0
            again = await launcher.start(port=proxy.port)
            async with session.get(f"{again.base_url}/streams/{stream_id}") as resp:
                assert resp.status == 200
                assert (await resp.json())["stream"]["original_url"] == url


class TestStartupFailures:
    async def test_port_in_use_is_one_line_naming_the_port(self, launcher: Launcher) -> None:
        """A port that is taken ends the process with status 1 and one line, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            status, err = await launcher.run_to_exit(port=port)
        assert status == 1
        assert err.count("\n") == 1, err
        assert f"127.0.0.1:{port}" in err
        assert "in use" in err
        assert "Traceback" not in err

    async def test_data_dir_below_a_file_is_one_clear_line(
        self, launcher: Launcher, tmp_path: Path
    ) -> None:
        """A data directory that cannot be created ends with status 2 and names the path."""
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("")
        status, err = await launcher.run_to_exit(data_dir=blocker / "data")
        assert status == 2
        assert err.count("\n") == 1, err
        assert f"data directory {blocker / 'data'} is not writable" in err
        assert "Traceback" not in err

    async def test_bad_config_file_is_one_line(self, launcher: Launcher, tmp_path: Path) -> None:
        """Invalid TOML ends the real process with status 2 and one line."""
        config = tmp_path / "config.toml"
        config.write_text("[server\nport = 1\n")
        status, err = await launcher.run_to_exit("--config", str(config))
        assert status == 2
        assert err.count("\n") == 1, err
        assert "is not valid TOML" in err
        assert "Traceback" not in err


class TestPrepareDataDir:
    def test_creates_missing_parents(self, tmp_path: Path) -> None:
        """A data directory several levels deep is created on first start."""
        target = tmp_path / "a" / "b" / "data"
        prepare_data_dir(target)
        assert target.is_dir()
        assert list(target.iterdir()) == []  # the write probe leaves nothing behind

    def test_read_only_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory on a read-only mount (or without write permission) is refused."""
        if os.geteuid() == 0:
            pytest.skip("root can write into a directory without write permission")
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
        with pytest.raises(StartupError, match="is not writable: Permission denied"):
            prepare_data_dir(target)

    def test_existing_directory_that_refuses_files_is_refused(self) -> None:
        """An existing directory where no file can be created fails the write probe.

        /proc/self refuses new files even to root, which a permission bit cannot do.
        """
        target = Path("/proc/self")
        if not target.is_dir():
            pytest.skip("needs Linux procfs")
        with pytest.raises(StartupError, match=r"^data directory /proc/self is not writable: "):
            prepare_data_dir(target)


class TestListenError:
    def test_unknown_host_is_named(self) -> None:
        """A host name that does not resolve is reported with the resolver's reason."""
        exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        message = str(listen_error("nowhere.invalid", 8085, exc))
        assert message == "cannot listen on nowhere.invalid:8085: Name or service not known"

    def test_errno_is_spelled_out(self) -> None:
        """A bind error carries the plain strerror, not asyncio's wrapped sentence."""
        exc = OSError(13, "error while attempting to bind on address ('0.0.0.0', 80): denied")
        assert str(listen_error("0.0.0.0", 80, exc)) == "cannot listen on 0.0.0.0:80: " + (
            os.strerror(13)
        )


def notify_socket(tmp_path: Path, *, abstract: bool) -> tuple[socket.socket, str]:
    """A bound datagram socket like systemd's, and the NOTIFY_SOCKET value naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"m3u-proxy-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        value = "@" + name
    else:
        # Paths of AF_UNIX sockets are limited to 107 bytes; tmp_path can be longer.
        value = str(tmp_path / "notify.sock")
        if len(value) > 100:
            value = f"/tmp/m3u-proxy-{uuid.uuid4().hex[:12]}.sock"  # noqa: S108 - short path
        sock.bind(value)
    sock.setblocking(False)
    return sock, value


async def next_message(sock: socket.socket, seconds: float = 10) -> dict[str, str]:
    """The next sd_notify datagram, parsed into its KEY=value fields."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        data = await loop.sock_recv(sock, 4096)
    return dict(line.split("=", 1) for line in data.decode().splitlines())


class TestNotifier:
    @pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
    async def test_messages_reach_the_socket(self, tmp_path: Path, abstract: bool) -> None:
        """READY=1 with STATUS and MAINPID arrives as one datagram, path or @abstract."""
        sock, value = notify_socket(tmp_path, abstract=abstract)
        with sock:
            notifier = Notifier({"NOTIFY_SOCKET": value})
            assert notifier.ready("Serving on http://127.0.0.1:1")
            assert await next_message(sock) == {
                "READY": "1",
                "STATUS": "Serving on http://127.0.0.1:1",
                "MAINPID": str(os.getpid()),
            }
            assert notifier.stopping("bye")
            assert await next_message(sock) == {"STOPPING": "1", "STATUS": "bye"}
        if not abstract:
            os.unlink(value)

    def test_without_notify_socket_nothing_is_sent(self) -> None:
        """Outside systemd the notifier is disabled and sending is a no-op."""
        notifier = Notifier({})
        assert not notifier.enabled
        assert not notifier.ready("x")

    def test_dead_socket_does_not_raise(self, tmp_path: Path) -> None:
        """A NOTIFY_SOCKET nobody listens on is reported as undelivered, not raised."""
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
        assert notifier.enabled
        assert not notifier.status("hello")


class TestSdNotify:
    async def test_ready_after_listening_and_stopping_on_sigterm(
        self, launcher: Launcher, tmp_path: Path
    ) -> None:
        """READY=1 is sent once /health answers, STOPPING=1 on SIGTERM, then exit 0."""
        sock, value = notify_socket(tmp_path, abstract=True)
        with sock:
            proxy = await launcher.start(
                env=child_env(NOTIFY_SOCKET=value, M3U_PROXY_SHUTDOWN_TIMEOUT="30"),
                healthy=False,
            )
            message = await next_message(sock)
            while "READY" not in message:  # STATUS-only progress lines come first
                message = await next_message(sock)
            assert proxy.proc is not None
            assert message["MAINPID"] == str(proxy.proc.pid)
            assert message["STATUS"] == f"Serving on {proxy.base_url}"
            # Ready means serving: the very first request must succeed, no retry.
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{proxy.base_url}/health") as resp,
            ):
                assert resp.status == 200
            proxy.send(signal.SIGTERM)
            message = await next_message(sock)
            assert message["STOPPING"] == "1"
            assert "SIGTERM" in message["STATUS"]
            assert await proxy.wait_exit(10) == 0

    async def test_watchdog_is_pinged_from_the_loop(
        self, launcher: Launcher, tmp_path: Path
    ) -> None:
        """With WATCHDOG_USEC set, WATCHDOG=1 arrives repeatedly after READY=1."""
        sock, value = notify_socket(tmp_path, abstract=True)
        with sock:
            env = child_env(NOTIFY_SOCKET=value, WATCHDOG_USEC="200000")
            proxy = await launcher.start(env=env, healthy=False)
            pings = 0
            while pings < 3:
                message = await next_message(sock, seconds=2)
                pings += message.get("WATCHDOG") == "1"
            proxy.send(signal.SIGTERM)
            assert await proxy.wait_exit(10) == 0

    def test_watchdog_interval_is_half_the_timeout(self) -> None:
        """systemd's WATCHDOG_USEC becomes a ping every half of it, only for this process."""
        assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
        assert watchdog_interval({}) is None
        assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
        assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None

    async def test_failure_is_reported_as_status(self, launcher: Launcher, tmp_path: Path) -> None:
        """A start-up failure leaves its reason in STATUS and never sends READY=1."""
        sock, value = notify_socket(tmp_path, abstract=True)
        with sock, socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            status, _ = await launcher.run_to_exit(env=child_env(NOTIFY_SOCKET=value), port=port)
            assert status == 1
            messages = []
            while True:
                try:
                    messages.append(await next_message(sock, seconds=0.5))
                except TimeoutError:
                    break
        assert not any("READY" in m for m in messages)
        assert messages[-1]["STATUS"].startswith(f"Failed: cannot listen on 127.0.0.1:{port}")
