"""The command line: help, bad configuration, a real start that answers /health."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from m3u_proxy.cli import main
from tests.conftest import start_fails


class TestMain:
    def test_help_documents_the_flags(self) -> None:
        """--help lists every option named by the issue."""
        out = subprocess.run(
            [sys.executable, "-m", "m3u_proxy", "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for flag in ("--config", "--host", "--port", "--data-dir", "--log-level"):
            assert flag in out

    @pytest.mark.parametrize(
        ("argv", "env", "fragment"),
        [
            (["--port", "99999"], {}, "invalid port"),
            ([], {"CLIENT_TIMEOUT": "-3"}, "must not be negative"),
            (["--log-level", "LOUD"], {}, "unknown log level"),
            (["--config", "/nonexistent/m3u.toml"], {}, "cannot read config file"),
        ],
    )
    def test_bad_config_exits_2_with_one_line(
        self,
        argv: list[str],
        env: dict[str, str],
        fragment: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Invalid configuration exits with status 2 and one clear line, no traceback."""
        assert main(argv, env) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert fragment in err
        assert "Traceback" not in err

    def test_corrupt_database_exits_2(self, tmp_path: Path) -> None:
        """A corrupt SQLite registry stops the real process with status 2 and one line."""
        (tmp_path / "m3u-proxy.sqlite3").write_bytes(b"garbage" * 200)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # SQLite's case
        proc = start_fails(tmp_path, env)
        assert proc.returncode == 2
        assert "cannot open the database" in proc.stderr
        assert "Traceback" not in proc.stderr
