"""Configuration loading: precedence, env names, validation and the example file."""

import tomllib
from pathlib import Path

import attrs
import pytest

from m3u_proxy.config import Config, env_name, iter_keys, load_config
from m3u_proxy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


class TestPrecedence:
    def test_defaults_without_any_source(self) -> None:
        """With no file, environment or options the embedded defaults apply."""
        config = load_config(None, {})
        assert config.server.host == "0.0.0.0"
        assert config.server.port == 8085
        assert config.storage.data_dir == "./data"
        assert config.clients.client_timeout == 30.0
        assert config.clients.stream_timeout == 300.0

    def test_argv_beats_env_beats_file(self, tmp_path: Path) -> None:
        """A command-line option wins over the environment, which wins over the file."""
        path = write(
            tmp_path, "[server]\nport = 1111\nhost = '127.0.0.2'\n[logging]\nlog_level = 'ERROR'\n"
        )
        config = load_config(path, {"PORT": "2222", "LOG_LEVEL": "debug"}, {"port": 3333})
        assert config.server.port == 3333
        assert config.logging.log_level == "DEBUG"
        assert config.server.host == "127.0.0.2"

    def test_seed_environment_names(self) -> None:
        """The seed names (HOST, PORT, LOG_LEVEL, CLIENT_TIMEOUT, ...) work as named."""
        env = {
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "LOG_LEVEL": "WARNING",
            "CLIENT_TIMEOUT": "12",
            "STREAM_TIMEOUT": "60.5",
            "API_TOKEN": "s3cret",
            "ROOT_PATH": "/iptv/",
        }
        config = load_config(None, env)
        assert (config.server.host, config.server.port) == ("127.0.0.1", 9000)
        assert config.logging.log_level == "WARNING"
        assert config.clients.client_timeout == 12.0
        assert config.clients.stream_timeout == 60.5
        assert config.auth.api_token == "s3cret"
        assert config.server.root_path == "/iptv"

    def test_every_other_key_has_a_prefixed_env_form(self) -> None:
        """Keys without a seed name read M3U_PROXY_<KEY>, typed like the key."""
        env = {
            "M3U_PROXY_STALL_TIMEOUT": "1.5",
            "M3U_PROXY_PLAYBACK_AUTH": "yes",
            "M3U_PROXY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        }
        config = load_config(None, env)
        assert config.upstream.stall_timeout == 1.5
        assert config.auth.playback_auth is True
        assert config.server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
        names = [env_name(f) for _, f in iter_keys()]
        assert len(names) == len(set(names))


class TestValidation:
    @pytest.mark.parametrize(
        ("env", "fragment"),
        [
            ({"PORT": "70000"}, "invalid port"),
            ({"PORT": "eighty"}, "PORT"),
            ({"CLIENT_TIMEOUT": "-1"}, "must not be negative"),
            ({"LOG_LEVEL": "chatty"}, "unknown log level"),
            ({"M3U_PROXY_STALL_TIMEOUT": "0"}, "must be positive"),
            ({"M3U_PROXY_PLAYBACK_AUTH": "maybe"}, "not a boolean"),
            ({"M3U_PROXY_TRUSTED_PROXIES": "not-an-ip"}, "trusted_proxies"),
        ],
    )
    def test_bad_values_are_refused_with_a_clear_message(
        self, env: dict[str, str], fragment: str
    ) -> None:
        """Values that cannot work raise ConfigError naming the problem."""
        with pytest.raises(ConfigError, match=fragment):
            load_config(None, env)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing config file is a ConfigError, not an OSError."""
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(str(tmp_path / "nope.toml"), {})

    def test_invalid_toml_and_unknown_keys(self, tmp_path: Path) -> None:
        """Broken TOML, unknown sections, unknown keys and wrong types are refused."""
        for text, fragment in [
            ("[server\n", "not valid TOML"),
            ("[nonsense]\nx = 1\n", "unknown config section"),
            ("[server]\nprot = 1\n", "unknown config key server.prot"),
            ("[server]\nport = '80'\n", "expected int"),
        ]:
            with pytest.raises(ConfigError, match=fragment):
                load_config(write(tmp_path, text), {})


class TestExampleFile:
    def test_example_lists_every_key_with_its_default(self) -> None:
        """config.example.toml loads and equals the built-in defaults, key for key."""
        path = ROOT / "config.example.toml"
        table = tomllib.loads(path.read_text())
        listed = {(section, key) for section, values in table.items() for key in values}
        assert listed == {(section, f.name) for section, f in iter_keys()}
        assert load_config(str(path), {}) == Config()

    def test_example_mentions_every_env_name(self) -> None:
        """Each key's environment name is documented next to it."""
        text = (ROOT / "config.example.toml").read_text()
        for _, field in iter_keys():
            assert f"env {env_name(field)}" in text

    def test_config_is_frozen(self) -> None:
        """The tree cannot be changed after loading."""
        config = load_config(None, {})
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            config.server.port = 1  # type: ignore[misc]


class TestReadmeTable:
    def test_readme_documents_every_key_as_the_example_file(self) -> None:
        """The README's configuration table has one row per key, with env name and default."""
        readme = (ROOT / "README.md").read_text()
        example = tomllib.loads((ROOT / "config.example.toml").read_text())
        rows = [line for line in readme.splitlines() if line.startswith("| `")]
        documented = {row.split("`")[1]: row for row in rows}
        assert set(documented) == {f"{s}.{f.name}" for s, f in iter_keys()}
        for section, field in iter_keys():
            row = documented[f"{section}.{field.name}"]
            assert f"`{env_name(field)}`" in row
            default = example[section][field.name]
            shown = row.split("|")[3].strip().strip("`")
            assert tomllib.loads(f"v = {shown}")["v"] == default


class TestProviderTables:
    def test_the_commented_example_loads(self, tmp_path: Path) -> None:
        """The [[providers]] example at the end of config.example.toml, uncommented, loads."""
        text = (ROOT / "config.example.toml").read_text()
        start = text.index("# [[providers]]")
        block = "\n".join(line.removeprefix("# ") for line in text[start:].splitlines())
        config = load_config(write(tmp_path, block), {})
        assert config.providers == (
            {
                "name": "acme",
                "max_connections": 1,
                "match": ["http://acme.example:8080/live/user1/"],
                "on_limit": "reject",
                "slot_wait": 2.0,
            },
        )

    def test_tables_must_be_tables_with_a_name(self, tmp_path: Path) -> None:
        """providers = "x" or a table without a name is refused with one line."""
        for text, fragment in [
            ('providers = "acme"\n', "must be \\[\\[providers\\]\\] tables"),
            ("[[providers]]\nmax_connections = 1\n", "providers\\[0\\].*needs a name"),
        ]:
            with pytest.raises(ConfigError, match=fragment):
                load_config(write(tmp_path, text), {})

    def test_sharing_mode_is_checked(self, tmp_path: Path) -> None:
        """sharing.mode takes auto, always or never (file or environment)."""
        assert load_config(None, {"M3U_PROXY_SHARING_MODE": "never"}).sharing.mode == "never"
        with pytest.raises(ConfigError, match=r"sharing\.mode"):
            load_config(write(tmp_path, '[sharing]\nmode = "sometimes"\n'), {})
