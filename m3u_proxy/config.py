"""Configuration: a frozen attrs tree loaded by one function from TOML, environment and argv.

Precedence is argv > environment > TOML file > defaults. Every key lives in one TOML
section and has one environment name: the seed's names (``HOST``, ``PORT``, ...) where
API.md fixes them, ``M3U_PROXY_<KEY>`` for everything else. The environment is passed in
as a mapping, so callers (and tests) never need to patch ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from m3u_proxy.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A common player's own User-Agent: providers see a player, not what sits in front of
# them (issue #11). Override with upstream.user_agent or a stream's user_agent.
DEFAULT_USER_AGENT = "VLC/3.0.21 LibVLC/3.0.21"


def _opt(default: Any, kind: type, help: str, env: str | None = None) -> Any:
    """A config field: ``kind`` drives parsing from strings; ``env`` is a fixed legacy name."""
    return attrs.field(default=default, metadata={"kind": kind, "help": help, "env": env})


@attrs.frozen
class ServerConfig:
    host: str = _opt("0.0.0.0", str, "address to listen on", env="HOST")  # noqa: S104
    port: int = _opt(8085, int, "TCP port to listen on", env="PORT")
    root_path: str = _opt("", str, "path prefix when served below a sub-path", env="ROOT_PATH")
    public_url: str = _opt("", str, "absolute base URL for links in exported playlists")
    trusted_proxies: tuple[str, ...] = _opt(
        (), tuple, "addresses/networks whose X-Forwarded-* headers are honoured"
    )
    max_body_size: int = _opt(1_048_576, int, "largest accepted request body in bytes")
    max_clients: int = _opt(0, int, "playback connections at most (0 = no limit); beyond: 503")
    shutdown_timeout: float = _opt(5.0, float, "seconds active streams get to end on SIGTERM")


@attrs.frozen
class AuthConfig:
    api_token: str = _opt("", str, "token for management routes (empty = open)", env="API_TOKEN")
    playback_auth: bool = _opt(False, bool, "require a signed token on playback URLs")
    secret_key: str = _opt("", str, "HMAC secret for URL tokens (empty = generated in data_dir)")


@attrs.frozen
class StorageConfig:
    data_dir: str = _opt("./data", str, "directory for the SQLite registry and the secret")
    redis_url: str = _opt(
        "",
        str,
        "redis://, rediss:// or unix:// URL: share state between instances (empty = SQLite)",
        env="REDIS_URL",
    )
    redis_prefix: str = _opt("m3u-proxy", str, "prefix of every Redis key and channel")


@attrs.frozen
class LoggingConfig:
    log_level: str = _opt("INFO", str, "DEBUG, INFO, WARNING, ERROR or CRITICAL", env="LOG_LEVEL")
    log_format: str = _opt("auto", str, "auto (JSON unless a TTY), json or console")


@attrs.frozen
class UpstreamConfig:
    user_agent: str = _opt(DEFAULT_USER_AGENT, str, "User-Agent sent to providers by default")
    connect_timeout: float = _opt(5.0, float, "seconds to open a provider connection")
    stall_timeout: float = _opt(3.0, float, "seconds without a byte before failing over")
    chunk_size: int = _opt(65_536, int, "largest chunk read from a provider at once")
    pool_limit: int = _opt(0, int, "provider connections at most (0 = no limit)")
    pool_limit_per_host: int = _opt(0, int, "provider connections per host at most (0 = none)")
    keepalive_timeout: float = _opt(30.0, float, "seconds an idle pooled connection is kept")
    max_redirects: int = _opt(5, int, "provider redirects followed per request")
    connect_retries: int = _opt(1, int, "quick retries of the same URL after a connect error")
    url_cooldown: float = _opt(2.0, float, "seconds a failed URL is skipped by other clients")
    max_resolver_hops: int = _opt(3, int, "failover_resolver_url answers used per chain")


@attrs.frozen
class SpliceConfig:
    keyframe_wait_bytes: int = _opt(
        8 * 1_048_576, int, "bytes of a new source searched for PAT, PMT and a keyframe"
    )
    keyframe_wait_seconds: float = _opt(
        5.0, float, "seconds a new source is searched for PAT, PMT and a keyframe"
    )
    overlap_window_bytes: int = _opt(
        8 * 1_048_576, int, "bytes of a reconnected source searched for the player's last packets"
    )
    overlap_history_packets: int = _opt(
        16384, int, "recent packets a player's history covers (one byte per four)"
    )


@attrs.frozen
class ClientsConfig:
    client_timeout: float = _opt(
        30.0,
        float,
        "seconds a player may block writes, an HLS player stay silent, a body take",
        env="CLIENT_TIMEOUT",
    )
    stream_timeout: float = _opt(
        300.0, float, "seconds an idle stream keeps its runtime state", env="STREAM_TIMEOUT"
    )


@attrs.frozen
class HlsConfig:
    hls_cache_entries: int = _opt(64, int, "segments kept for the next clients")
    hls_cache_max_bytes: int = _opt(64 * 1_048_576, int, "bytes the segment cache holds at most")
    hls_cache_ttl: float = _opt(30.0, float, "seconds a cached segment is served")
    prefetch_segments: int = _opt(
        0, int, "newest live segments fetched before a player asks, per stream (0 = off)"
    )
    blocking_timeout: float = _opt(
        30.0, float, "seconds an LL-HLS blocking reload or preload hint may wait for the provider"
    )


@attrs.frozen
class PlaylistsConfig:
    serve_logos: bool = _opt(
        False, bool, "exported playlists point tvg-logo at this proxy (/logos/), not the provider"
    )


@attrs.frozen
class EventsConfig:
    webhook_queue_size: int = _opt(1000, int, "undelivered events kept per webhook")
    metrics_stream_labels: bool = _opt(False, bool, "per-stream labels on /metrics")


SHARING_MODES = ("auto", "always", "never")


@attrs.frozen
class SharingConfig:
    mode: str = _opt(
        "auto",
        str,
        "default `sharing` of streams: auto, always or never",
        env="M3U_PROXY_SHARING_MODE",
    )
    buffer_bytes: int = _opt(
        4 * 1_048_576,
        int,
        "ring of TS packets per shared stream, in bytes",
        env="M3U_PROXY_SHARING_BUFFER_BYTES",
    )
    linger: float = _opt(
        0.0,
        float,
        "seconds a shared producer stays open after its last viewer",
        env="M3U_PROXY_SHARING_LINGER",
    )


@attrs.frozen
class TranscodeConfig:
    max_processes: int = _opt(
        4,
        int,
        "ffmpeg transcodes running at once; a new one beyond is a 503 (0 = no limit)",
        env="M3U_PROXY_TRANSCODE_MAX_PROCESSES",
    )
    niceness: int = _opt(
        10,
        int,
        "nice value of ffmpeg processes (0-19; higher yields the CPU)",
        env="M3U_PROXY_TRANSCODE_NICENESS",
    )


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    splice: SpliceConfig = SpliceConfig()
    clients: ClientsConfig = ClientsConfig()
    hls: HlsConfig = HlsConfig()
    playlists: PlaylistsConfig = PlaylistsConfig()
    events: EventsConfig = EventsConfig()
    sharing: SharingConfig = SharingConfig()
    transcode: TranscodeConfig = TranscodeConfig()
    # ``[[providers]]`` tables as written: `m3u_proxy.providers.model` validates them when
    # the app is built (they are seeds; PUT /providers/{name} overrides one by name).
    providers: tuple[dict[str, Any], ...] = attrs.field(
        default=(), hash=False, metadata={"tables": True}
    )

    @property
    def data_path(self) -> Path:
        return Path(self.storage.data_dir)


def sections() -> dict[str, type]:
    """Section name -> its attrs class, in declaration order."""
    defaults = Config()
    return {
        f.name: type(getattr(defaults, f.name))
        for f in attrs.fields(Config)
        if not f.metadata.get("tables")
    }


def iter_keys() -> list[tuple[str, attrs.Attribute[Any]]]:
    """Every (section, field) of the tree, in declaration order."""
    return [(name, field) for name, cls in sections().items() for field in attrs.fields(cls)]


def env_name(field: attrs.Attribute[Any]) -> str:
    legacy: str | None = field.metadata["env"]
    return legacy or f"M3U_PROXY_{field.name.upper()}"


def _from_string(kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if kind is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return kind(raw.strip()) if kind in (int, float) else raw


def _from_toml(kind: type, value: Any) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(
    toml_path: str | None, environ: Mapping[str, str], argv: Mapping[str, Any] | None = None
) -> Config:
    """Build the Config from a TOML file, an environment mapping and parsed CLI options.

    ``argv`` maps field names (``host``, ``port``, ``data_dir``, ``log_level``) to values
    already parsed by the CLI; ``None`` values are ignored.
    """
    table = _read_toml(toml_path) if toml_path else {}
    providers = _provider_tables(table.pop("providers", []), toml_path)
    known_sections = sections()
    for name, value in table.items():
        if name not in known_sections or not isinstance(value, dict):
            raise ConfigError(f"unknown config section [{name}] in {toml_path}")
    values: dict[str, dict[str, Any]] = {name: {} for name in known_sections}
    for section, field in iter_keys():
        kind: type = field.metadata["kind"]
        where = f"{section}.{field.name}"
        try:
            if argv is not None and argv.get(field.name) is not None:
                values[section][field.name] = argv[field.name]
            elif env_name(field) in environ:
                where = env_name(field)
                values[section][field.name] = _from_string(kind, environ[env_name(field)])
            elif field.name in table.get(section, {}):
                values[section][field.name] = _from_toml(kind, table[section][field.name])
        except ValueError as exc:
            raise ConfigError(f"invalid value for {where}: {exc}") from exc
    for section_name, section_table in table.items():
        known = {f.name for s, f in iter_keys() if s == section_name}
        for key in section_table:
            if key not in known:
                raise ConfigError(f"unknown config key {section_name}.{key} in {toml_path}")
    built = {name: cls(**values[name]) for name, cls in known_sections.items()}
    return _validate(Config(**built, providers=providers))


def _provider_tables(value: Any, toml_path: str | None) -> tuple[dict[str, Any], ...]:
    """``[[providers]]``: an array of tables, each with a ``name`` (the rest is checked
    by the providers model when the app is built)."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"providers in {toml_path} must be [[providers]] tables")
    for i, item in enumerate(value):
        if not isinstance(item.get("name"), str):
            raise ConfigError(f"providers[{i}] in {toml_path} needs a name")
    return tuple(dict(item) for item in value)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(config: Config) -> Config:
    """Reject values that cannot work and normalise the ones with several spellings."""
    _check(0 <= config.server.port <= 65535, f"invalid port {config.server.port}: use 0-65535")
    level = config.logging.log_level.upper()
    _check(level in LOG_LEVELS, f"unknown log level {config.logging.log_level!r}")
    _check(
        config.logging.log_format in ("auto", "json", "console"),
        f"unknown log_format {config.logging.log_format!r}: use auto, json or console",
    )
    for section, field in iter_keys():
        value = getattr(getattr(config, section), field.name)
        if field.metadata["kind"] in (int, float):
            _check(value >= 0, f"{section}.{field.name} must not be negative (got {value})")
    _check(config.transcode.niceness <= 19, "transcode.niceness must be 0-19")
    for name in ("connect_timeout", "stall_timeout", "chunk_size"):
        _check(getattr(config.upstream, name) > 0, f"upstream.{name} must be positive")
    for network in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigError(f"server.trusted_proxies: {exc}") from exc
    _check(
        config.sharing.mode in SHARING_MODES,
        f"unknown sharing.mode {config.sharing.mode!r}: use auto, always or never",
    )
    _check(
        config.sharing.buffer_bytes >= 64 * 188,
        "sharing.buffer_bytes must hold at least 64 TS packets (12032 bytes)",
    )
    root = config.server.root_path.strip()
    root = ("/" + root.strip("/")) if root.strip("/") else ""
    public = config.server.public_url.rstrip("/")
    _check(
        not public or public.startswith(("http://", "https://")),
        "server.public_url must start with http:// or https://",
    )
    redis_url = config.storage.redis_url.strip()
    _check(
        not redis_url or redis_url.startswith(("redis://", "rediss://", "unix://")),
        "storage.redis_url must start with redis://, rediss:// or unix://",
    )
    _check(bool(config.storage.redis_prefix.strip()), "storage.redis_prefix must not be empty")
    return attrs.evolve(
        config,
        storage=attrs.evolve(config.storage, redis_url=redis_url),
        server=attrs.evolve(config.server, root_path=root, public_url=public),
        logging=attrs.evolve(config.logging, log_level=level),
    )
