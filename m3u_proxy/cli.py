"""Command line: ``m3u-proxy`` / ``python -m m3u_proxy``.

Loads the configuration (argv > environment > TOML > defaults), sets up logging,
picks the event loop (uvloop when importable) and runs the server until SIGTERM or
SIGINT. Configuration and start-up problems end the process with status 2 and one
clear line on stderr, never a traceback.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.app import create_app
from m3u_proxy.config import Config, load_config
from m3u_proxy.errors import ConfigError, StoreError
from m3u_proxy.logs import configure_logging, get_logger
from m3u_proxy.loops import loop_factory

EXIT_USAGE = 2
EXIT_RUNTIME = 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="m3u-proxy",
        description="IPTV stream proxy: register provider streams over the REST API and "
        "point players at /stream/<id> or /hls/<id>/playlist.m3u8.",
        epilog="Every option also has an environment form and a config-file key; "
        "see config.example.toml. Precedence: options > environment > file > defaults.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (see config.example.toml)"
    )
    parser.add_argument("--host", help="address to listen on (env HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (env PORT, default 8085)")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory of the SQLite registry (env M3U_PROXY_DATA_DIR, default ./data)",
    )
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (env LOG_LEVEL)"
    )
    parser.add_argument("--version", action="version", version=f"m3u-proxy {__version__}")
    return parser.parse_args(argv)


def build_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    args = parse_args(argv)
    toml_path = args.config or environ.get("M3U_PROXY_CONFIG")
    return load_config(
        toml_path,
        environ,
        {
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
        },
    )


def fail(message: str, code: int) -> int:
    print(f"m3u-proxy: {message}", file=sys.stderr)
    return code


async def serve(config: Config, loop_name: str) -> None:
    log = get_logger("m3u_proxy")
    app = create_app(config)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, backlog=1024)
        await site.start()
        log.info(
            "server_started",
            host=config.server.host,
            port=config.server.port,
            loop=loop_name,
            version=__version__,
            data_dir=config.storage.data_dir,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        config = build_config(
            sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ
        )
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    configure_logging(config.logging.log_level, config.logging.log_format)
    loop_name, factory = loop_factory()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config, loop_name))
    except (StoreError, ConfigError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(
            f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}",
            EXIT_RUNTIME,
        )
    except KeyboardInterrupt:
        pass
    return 0
