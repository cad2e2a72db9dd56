"""Deployment files: the systemd unit, its environment file, `make install-service`, Docker.

Neither systemd (as PID 1) nor a Docker engine is needed: the unit's command line and
the image's entry point are run for real through the installed console script, the
image's health check is run against a live proxy, and the unit is checked by
``systemd-analyze`` when that tool is installed. The hardening the unit asks for that
can be reproduced without systemd (W^X memory) is reproduced with ``prctl``.
"""

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from m3u_proxy.cli import build_config, parse_args
from m3u_proxy.config import Config, env_name, iter_keys, load_config
from tests.conftest import free_port, proxy_argv
from tests.process.test_lifecycle import REPO, ProxyProcess, child_env, next_message, notify_socket
from tests.providers import TS_PACKET, Provider

UNIT = REPO / "contrib" / "m3u-proxy.service"
ENV_FILE = REPO / "contrib" / "m3u-proxy.env"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV_SCRIPT = Path(sys.executable).with_name("m3u-proxy")
EXEC_PREFIXES = "@-:+!|"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value given (systemd allows repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    logical = ""
    for raw in text.splitlines():
        line = logical + raw.strip()
        if line.endswith("\\"):
            logical = line[:-1] + " "
            continue
        logical = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    """The effective value of a single-valued setting (the last assignment wins)."""
    assert key in settings, f"{key}= is missing from the unit"
    return settings[key][-1]


def exec_start() -> list[str]:
    """ExecStart as argv, without systemd's prefix characters on the binary."""
    values = service()["ExecStart"]
    assert len(values) == 1, "a Type=notify service has exactly one ExecStart"
    argv = shlex.split(values[0])
    argv[0] = argv[0].lstrip(EXEC_PREFIXES)
    return argv


def swap_option(argv: list[str], option: str, value: str) -> list[str]:
    """Replace the value of ``--option VALUE`` (it must be present)."""
    index = argv.index(option)
    return [*argv[: index + 1], value, *argv[index + 2 :]]


def unit_environment() -> dict[str, str]:
    """The Environment= assignments of the unit."""
    env: dict[str, str] = {}
    for value in service().get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def local_unit(tmp_path: Path) -> Path:
    """The unit with its binary pointing at this checkout's console script."""
    text = UNIT.read_text().replace(exec_start()[0], str(VENV_SCRIPT))
    path = tmp_path / "m3u-proxy.service"
    path.write_text(text)
    return path


class TestUnitFile:
    def test_is_a_hardened_notify_service(self) -> None:
        """The unit asks for readiness notification, restarts and the issue's hardening."""
        settings = service()
        expected = {
            "Type": "notify",
            "NotifyAccess": "main",
            "Restart": "on-failure",
            "StateDirectory": "m3u-proxy",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "NoNewPrivileges": "yes",
            "LimitNOFILE": "65536",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
            "ProtectControlGroups": "yes",
            "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes",
            "CapabilityBoundingSet": "",
        }
        assert {key: one(settings, key) for key in expected} == expected
        assert one(settings, "DynamicUser") == "yes" or "User" in settings
        assert set(one(settings, "RestrictAddressFamilies").split()) == {
            "AF_INET",
            "AF_INET6",
            "AF_UNIX",  # sd_notify and journald
        }
        assert "@system-service" in settings["SystemCallFilter"][0].split()

    def test_data_dir_is_the_state_directory(self) -> None:
        """--data-dir is the directory systemd creates and makes writable for the service."""
        argv = exec_start()
        data_dir = argv[argv.index("--data-dir") + 1]
        assert data_dir == "/var/lib/" + one(service(), "StateDirectory")

    def test_a_fresh_install_needs_no_config_file(self) -> None:
        """No --config on the command line and only optional environment files.

        A --config path that does not exist stops the proxy, so a fresh install with
        nothing in /etc/m3u-proxy must not name one; the env file may.
        """
        settings = service()
        assert "--config" not in exec_start()
        assert "M3U_PROXY_CONFIG" not in unit_environment()
        files = settings["EnvironmentFile"]
        assert files == ["-/etc/m3u-proxy/m3u-proxy.env"]

    def test_restart_is_not_attempted_for_bad_configuration(self) -> None:
        """Exit status 2 (bad configuration, unusable data dir) is not retried forever."""
        assert one(service(), "RestartPreventExitStatus") == "2"

    def test_exec_start_flags_are_accepted(self) -> None:
        """Every flag of ExecStart is one the real argument parser and config accept."""
        argv = exec_start()
        assert argv[0] == "/opt/m3u-proxy/bin/m3u-proxy"
        args = parse_args(argv[1:])
        assert args.data_dir == "/var/lib/m3u-proxy"
        config = build_config(argv[1:], unit_environment())
        assert config.storage.data_dir == "/var/lib/m3u-proxy"
        assert config.server.port == Config().server.port

    async def test_exec_start_becomes_ready_and_stops_cleanly(self, tmp_path: Path) -> None:
        """ExecStart's command, run as systemd would, sends READY=1, serves, stops with 0."""
        if not VENV_SCRIPT.exists():
            pytest.skip(f"no console script next to {sys.executable}")
        port = free_port()
        argv = swap_option(exec_start(), "--data-dir", str(tmp_path / "state"))
        argv = [str(VENV_SCRIPT), *argv[1:], "--host", "127.0.0.1", "--port", str(port)]
        sock, value = notify_socket(tmp_path, abstract=True)
        env = child_env(NOTIFY_SOCKET=value, **unit_environment())
        proxy = ProxyProcess(argv, tmp_path / "logs", port, env)
        with sock:
            await proxy.start()
            try:
                message = await next_message(sock)
                while "READY" not in message:
                    message = await next_message(sock)
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{proxy.base_url}/health") as resp,
                ):
                    assert resp.status == 200
                    assert (await resp.json())["status"] == "healthy"
                proxy.send(signal.SIGTERM)  # systemd's default KillSignal
                assert await proxy.wait_exit(10) == 0
            finally:
                await proxy.kill()
        assert (tmp_path / "state" / "m3u-proxy.sqlite3").exists()


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=30, check=False)


class TestSystemdAnalyze:
    def test_verify_passes(self, tmp_path: Path) -> None:
        """systemd-analyze verify accepts the unit with no warning about any line of it."""
        path = local_unit(tmp_path)
        result = systemd_analyze("verify", "--man=no", str(path))
        complaints = [line for line in result.stderr.splitlines() if path.name in line]
        assert result.returncode == 0, result.stderr
        assert complaints == []

    def test_security_exposure_is_low(self, tmp_path: Path) -> None:
        """systemd-analyze security rates the unit's exposure at 2.0 ("OK") or better."""
        path = local_unit(tmp_path)
        result = systemd_analyze("security", "--offline=true", "--threshold=20", str(path))
        if "offline" in result.stderr and "unrecognized" in result.stderr:
            pytest.skip("this systemd-analyze has no offline security review")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# Turns on the kernel's W^X policy (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN; Linux 6.3+),
# the same restriction as MemoryDenyWriteExecute=yes, then execs the given command. The
# policy is inherited across execve, so the proxy runs entirely under it.
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("unsupported", file=sys.stderr)
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""
WX_PROBE = (
    "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
)


class TestMemoryDenyWriteExecute:
    async def test_proxy_streams_under_w_xor_x(self, tmp_path: Path) -> None:
        """With W+X mappings refused, the proxy resolves a provider name and streams."""
        wrapper = tmp_path / "mdwe.py"
        wrapper.write_text(MDWE_WRAPPER)
        probe = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(wrapper), sys.executable, "-c", WX_PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 77:
            pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3+)")
        assert "PermissionError" in probe.stderr, "the W^X policy was not applied"
        port = free_port()
        argv = [
            sys.executable,
            str(wrapper),
            *proxy_argv(tmp_path / "data", port),
        ]
        proxy = ProxyProcess(argv, tmp_path / "logs", port, child_env())
        await proxy.start()
        try:
            await proxy.wait_healthy()
            async with Provider() as provider, aiohttp.ClientSession() as session:
                # A host name, so the provider connection goes through aiodns/pycares.
                url = provider.url("/live/wx.ts").replace("127.0.0.1", "localhost")
                async with session.post(f"{proxy.base_url}/streams", json={"url": url}) as resp:
                    stream_id = (await resp.json())["stream_id"]
                async with session.get(f"{proxy.base_url}/stream/{stream_id}") as resp:
                    assert resp.status == 200
                    async with asyncio.timeout(10):
                        await resp.content.readexactly(TS_PACKET * 100)
            proxy.send(signal.SIGTERM)
            assert await proxy.wait_exit(10) == 0
        finally:
            await proxy.kill()
        assert proxy.stderr == ""


def syscall_group(name: str) -> set[str]:
    """The system calls of a systemd filter group, nested groups expanded."""
    listing = systemd_analyze("syscall-filter", name).stdout.splitlines()[1:]
    calls: set[str] = set()
    for line in (raw.strip() for raw in listing):
        if line.startswith("@"):
            calls |= syscall_group(line)
        elif line and not line.startswith("#"):
            calls.add(line)
    return calls


def unit_allowed_syscalls() -> set[str]:
    """What the unit's SystemCallFilter= lines allow: the allow list minus ~deny lists."""
    allowed: set[str] = set()
    for value in service()["SystemCallFilter"]:
        deny = value.startswith("~")
        names: set[str] = set()
        for name in value.lstrip("~").split():
            names |= syscall_group(name) if name.startswith("@") else {name}
        allowed = allowed - names if deny else allowed | names
    return allowed


class TestSystemCallFilter:
    async def test_serving_needs_only_allowed_system_calls(self, tmp_path: Path) -> None:
        """Start, an API write, a live stream and a stop use only calls the unit allows."""
        strace = shutil.which("strace")
        if strace is None:
            pytest.skip("strace is not installed")
        allowed = unit_allowed_syscalls()  # skips without systemd-analyze
        trace = tmp_path / "trace.txt"
        port = free_port()
        argv = [
            strace,
            "-f",
            "-qq",
            "-o",
            str(trace),
            *proxy_argv(tmp_path / "data", port),
        ]
        sock, value = notify_socket(tmp_path, abstract=True)
        proxy = ProxyProcess(argv, tmp_path / "logs", port, child_env(NOTIFY_SOCKET=value))
        with sock:
            await proxy.start()
            try:
                message = await next_message(sock, seconds=30)
                while "READY" not in message:
                    message = await next_message(sock, seconds=30)
                async with Provider() as provider, aiohttp.ClientSession() as session:
                    url = provider.url("/live/sys.ts").replace("127.0.0.1", "localhost")
                    async with session.post(f"{proxy.base_url}/streams", json={"url": url}) as resp:
                        stream_id = (await resp.json())["stream_id"]
                    async with session.get(f"{proxy.base_url}/stream/{stream_id}") as resp:
                        async with asyncio.timeout(20):
                            await resp.content.readexactly(TS_PACKET * 100)
                        # The traced process, not strace: MAINPID names it.
                        os.kill(int(message["MAINPID"]), signal.SIGTERM)
                    status = await proxy.wait_exit(30)
            finally:
                await proxy.kill()
        if status != 0 and "ptrace" in proxy.stderr:
            pytest.skip(f"strace cannot trace here: {proxy.stderr.strip()}")
        assert status == 0, proxy.stderr
        used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace.read_text(), re.MULTILINE))
        assert len(used) > 20, "the trace is empty"
        if os.geteuid() == 0:
            # SQLite hands files it creates as root to the database's owner; the service
            # never runs as root (DynamicUser), and the call is refused with EPERM anyway.
            used.discard("fchown")
        assert used - allowed == set()


def env_file_assignments() -> dict[str, str]:
    """Every KEY=value of the example env file, commented out or not."""
    found: dict[str, str] = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.lstrip("#").strip()
        key, sep, value = line.partition("=")
        if sep and key.isupper() and " " not in key:
            found[key] = value
    return found


class TestEnvFile:
    def test_names_only_real_settings(self) -> None:
        """Every variable the example env file mentions is one the proxy reads."""
        known = {env_name(field) for _, field in iter_keys()} | {"M3U_PROXY_CONFIG"}
        assignments = env_file_assignments()
        assert assignments
        assert set(assignments) <= known

    def test_shows_the_defaults(self) -> None:
        """Uncommenting every line (but the config path) changes nothing: values are defaults."""
        assignments = env_file_assignments()
        assignments.pop("M3U_PROXY_CONFIG")
        assert load_config(None, assignments) == load_config(None, {})

    def test_config_path_is_where_install_service_expects_it(self) -> None:
        """The suggested config file sits beside the env file in /etc/m3u-proxy."""
        assert env_file_assignments()["M3U_PROXY_CONFIG"] == "/etc/m3u-proxy/config.toml"


def make_dry_run(target: str, *flags: str) -> str:
    tool = shutil.which("make")
    if tool is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [tool, "--dry-run", "--no-print-directory", *flags, target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestInstallServiceTarget:
    def test_installs_venv_unit_and_reloads(self) -> None:
        """The target fills the venv ExecStart runs, installs the unit, reloads systemd."""
        recipe = make_dry_run("install-service")
        venv = str(Path(exec_start()[0]).parent.parent)
        assert f"-m venv {venv}" in recipe
        assert f"{venv}/bin/pip install" in recipe
        assert "contrib/m3u-proxy.service /etc/systemd/system/m3u-proxy.service" in recipe
        assert "contrib/m3u-proxy.env /etc/m3u-proxy/m3u-proxy.env" in recipe
        assert "systemctl daemon-reload" in recipe

    def test_ends_cleanly_where_systemd_is_not_running(self) -> None:
        """Without systemd as PID 1 (a container) the target says so instead of failing:
        ``systemctl`` runs only when /run/systemd/system exists."""
        recipe = make_dry_run("install-service")
        assert "if [ -d /run/systemd/system ]; then" in recipe
        assert "systemd is not running here" in recipe

    def test_make_run_installs_only_what_running_needs(self) -> None:
        """From scratch (-B), `make run` installs the package without its dev extras;
        `make test` adds them."""
        run = make_dry_run("run", "-B")
        assert "pip install --quiet -e ." in run
        assert "[dev]" not in run
        assert "[dev]" in make_dry_run("test", "-B")

    def test_make_test_does_not_install(self) -> None:
        """`make test` never touches /etc or systemd."""
        recipe = make_dry_run("test")
        assert "systemctl" not in recipe
        assert "/etc/" not in recipe


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not logical):
            continue
        logical += stripped
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip() + " "
            continue
        word, _, rest = logical.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        logical = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def stage_value(word: str) -> str:
    values = [rest for w, rest in final_stage() if w == word]
    assert values, f"the final stage has no {word}"
    return values[-1]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{value} is not exec form"
    return [str(item) for item in parsed]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the context) or one of its parents is excluded."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern.lstrip("/"))
        for prefix in prefixes
        for pattern in patterns
    )


def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class TestDockerfile:
    def test_every_stage_is_slim_python_3_11(self) -> None:
        """The image is built on python:3.11-slim."""
        bases = [rest.split()[0] for word, rest in dockerfile_instructions() if word == "FROM"]
        assert bases
        assert all(base.startswith("python:3.11-slim") for base in bases)

    def test_runs_as_an_unprivileged_user(self) -> None:
        """The final stage switches to a created user that is not root."""
        user = stage_value("USER").split(":")[0]
        assert user not in ("root", "0", "")
        runs = " ".join(rest for word, rest in final_stage() if word == "RUN")
        assert "useradd" in runs
        assert user in runs

    def test_entrypoint_runs_the_console_script_with_real_flags(self) -> None:
        """ENTRYPOINT + CMD start m3u-proxy with flags the real parser accepts, and the
        data lands in /data unless ``-e M3U_PROXY_DATA_DIR`` says otherwise."""
        argv = exec_form(stage_value("ENTRYPOINT")) + exec_form(stage_value("CMD"))
        assert argv[0] == "m3u-proxy"
        parse_args(argv[1:])
        image_env = dict(pair.split("=", 1) for pair in stage_value("ENV").split() if "=" in pair)
        assert build_config(argv[1:], image_env).storage.data_dir == "/data"
        chosen = {**image_env, "M3U_PROXY_DATA_DIR": "/srv/tv"}
        assert build_config(argv[1:], chosen).storage.data_dir == "/srv/tv"

    def test_data_volume_and_port(self) -> None:
        """/data is a volume and the exposed port is the proxy's default port."""
        assert stage_value("VOLUME") == "/data"
        assert stage_value("EXPOSE") == str(Config().server.port)

    def test_installs_from_pyproject(self) -> None:
        """The package is installed with `pip install .` from the project's own files."""
        runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
        assert any(run.endswith("pip install .") for run in runs)
        copied = [
            source
            for word, rest in dockerfile_instructions()
            if word == "COPY" and not rest.startswith("--from")
            for source in rest.split()[:-1]
        ]
        readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
        assert {"pyproject.toml", readme, "m3u_proxy"} <= set(copied)
        patterns = ignore_patterns()
        for source in copied:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source, patterns), f"COPY {source} is .dockerignored"
        for module in (REPO / "m3u_proxy").glob("*.py"):
            assert not dockerignored(str(module.relative_to(REPO)), patterns)

    def test_dockerignore_keeps_local_state_out(self) -> None:
        """The virtualenv, data, caches and .git never reach the build context."""
        patterns = ignore_patterns()
        for path in (
            ".venv/bin/python",
            "data/m3u-proxy.sqlite3",
            ".git/HEAD",
            ".mypy_cache/x",
            ".ruff_cache/x",
            ".pytest_cache/x",
            "m3u_proxy/__pycache__/cli.cpython-311.pyc",
            "m3u_proxy.egg-info/PKG-INFO",
        ):
            assert dockerignored(path, patterns), path

    async def test_healthcheck_asks_health_with_python(self, tmp_path: Path) -> None:
        """The HEALTHCHECK command succeeds against a serving proxy and fails without one."""
        healthcheck = stage_value("HEALTHCHECK")
        assert "CMD [" in healthcheck
        argv = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
        assert argv[0] == "python"
        assert "/health" in " ".join(argv)
        assert not {"curl", "wget"} & set(" ".join(argv).split())
        argv[0] = sys.executable
        port = free_port()

        def check() -> int:
            env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port)}
            result = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
            return result.returncode

        assert await asyncio.to_thread(check) != 0  # nothing listens yet
        proxy = ProxyProcess(
            [
                sys.executable,
                "-m",
                "m3u_proxy",
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(tmp_path / "data"),
                "--log-level",
                "WARNING",
            ],
            tmp_path / "logs",
            port,
            child_env(PORT=str(port)),  # the image's way of choosing the port
        )
        await proxy.start()
        try:
            await proxy.wait_healthy()
            assert await asyncio.to_thread(check) == 0
        finally:
            await proxy.kill()
