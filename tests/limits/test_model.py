"""Provider definitions: validation, persistence and longest-prefix matching."""

from pathlib import Path
from typing import Any

import pytest

from m3u_proxy.errors import ValidationFailed
from m3u_proxy.providers.model import Providers, ProviderSpec, parse_provider
from m3u_proxy.store.sqlite import SqliteStore


class TestParse:
    def test_defaults(self) -> None:
        """An empty body is a counted, unlimited provider that rejects after 2 s."""
        spec = parse_provider("acme", {})
        assert spec == ProviderSpec("acme", None, (), "reject", 2.0)

    def test_full_body(self) -> None:
        """Every field is kept; duplicate prefixes are dropped."""
        body = {
            "max_connections": 2,
            "match": ["http://a.example/u/1/", "http://a.example/u/1/"],
            "on_limit": "preempt_oldest",
            "slot_wait": 0,
        }
        spec = parse_provider("a", body)
        assert spec.max_connections == 2
        assert spec.match == ("http://a.example/u/1/",)
        assert spec.on_limit == "preempt_oldest"
        assert spec.slot_wait == 0.0

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"max_connections": 0}, "max_connections"),
            ({"max_connections": -1}, "max_connections"),
            ({"max_connections": 1.5}, "max_connections"),
            ({"max_connections": True}, "max_connections"),
            ({"max_connections": "2"}, "max_connections"),
            ({"match": "http://a.example/"}, "match"),
            ({"match": ["ftp://a.example/"]}, "match[0]"),
            ({"match": ["a.example/live"]}, "match[0]"),
            ({"match": ["http://"]}, "match[0]"),
            ({"match": ["http://a.example/live?user=x"]}, "match[0]"),
            ({"match": ["http://a.example/#x"]}, "match[0]"),
            ({"match": ["http://a.example/ live"]}, "match[0]"),
            ({"match": ["http://a.example:99999/"]}, "match[0]"),
            ({"match": ["http://a.example/", 3]}, "match[1]"),
            ({"on_limit": "kick"}, "on_limit"),
            ({"slot_wait": -1}, "slot_wait"),
            ({"slot_wait": 61}, "slot_wait"),
            ({"slot_wait": "2"}, "slot_wait"),
        ],
    )
    def test_bad_fields_name_the_field(self, body: dict[str, Any], field: str) -> None:
        """Each unusable field is a 422 that names it."""
        with pytest.raises(ValidationFailed) as caught:
            parse_provider("acme", body)
        assert caught.value.field == field
        assert caught.value.status == 422

    @pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 65, "é"])
    def test_bad_names(self, name: str) -> None:
        """Names are short plain tokens (they become metric labels and URL segments)."""
        with pytest.raises(ValidationFailed, match="name"):
            parse_provider(name, {})

    def test_body_must_be_an_object(self) -> None:
        """A JSON array or string is not a provider."""
        with pytest.raises(ValidationFailed, match="body"):
            parse_provider("acme", ["x"])


def directory(*specs: ProviderSpec) -> Providers:
    return Providers(store=None, seeds=specs)  # type: ignore[arg-type]  # matching needs no store


class TestMatching:
    def test_longest_prefix_wins(self) -> None:
        """Two accounts on one host are told apart by their credential path."""
        providers = directory(
            ProviderSpec("host", match=("http://p.example:8080",)),
            ProviderSpec("alice", match=("http://p.example:8080/live/alice/",)),
            ProviderSpec("bob", match=("http://p.example:8080/live/bob",)),
        )
        pick = providers.provider_for
        assert pick("http://p.example:8080/live/alice/pw/1.ts").name == "alice"  # type: ignore[union-attr]
        assert pick("http://p.example:8080/live/bob/pw/1.ts").name == "bob"  # type: ignore[union-attr]
        assert pick("http://p.example:8080/live/carol/pw/1.ts").name == "host"  # type: ignore[union-attr]
        assert pick("http://other.example/live/alice/1.ts") is None

    def test_prefix_ends_at_a_boundary(self) -> None:
        """``/user1`` does not claim ``/user10``, nor ``:80`` the port 8080."""
        providers = directory(
            ProviderSpec("one", match=("http://p.example/user1",)),
            ProviderSpec("port", match=("http://q.example:80",)),
        )
        assert providers.provider_for("http://p.example/user10/1.ts") is None
        assert providers.provider_for("http://p.example/user1/1.ts") is not None
        assert providers.provider_for("http://p.example/user1?x=1") is not None
        assert providers.provider_for("http://q.example:8080/1.ts") is None

    def test_scheme_and_host_ignore_case_path_does_not(self) -> None:
        """Hosts compare case-insensitively; credentials in the path are case-sensitive."""
        providers = directory(ProviderSpec("a", match=("HTTP://P.Example/Live/U/",)))
        assert providers.provider_for("http://p.example/Live/U/1.ts") is not None
        assert providers.provider_for("http://p.example/live/u/1.ts") is None

    def test_stream_field_is_the_fallback(self) -> None:
        """A URL no prefix claims belongs to the stream's provider, if it names one."""
        providers = directory(
            ProviderSpec("a", match=("http://a.example/",)), ProviderSpec("b", max_connections=1)
        )
        assert providers.provider_for("http://a.example/1.ts", "b").name == "a"  # type: ignore[union-attr]
        assert providers.provider_for("http://z.example/1.ts", "b").name == "b"  # type: ignore[union-attr]
        assert providers.provider_for("http://z.example/1.ts", "unknown") is None
        assert providers.provider_for("http://z.example/1.ts") is None


class TestDirectory:
    async def test_saved_definitions_survive_a_restart(self, tmp_path: Path) -> None:
        """PUT definitions persist; a saved one overrides a config seed of the same name."""
        seed = ProviderSpec("acme", 1, ("http://a.example/",))
        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        providers = Providers(store, [seed])
        await providers.load()
        assert await providers.save(ProviderSpec("acme", 3, ("http://b.example/",))) is False
        assert await providers.save(ProviderSpec("other", 2)) is True
        await store.close()

        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        again = Providers(store, [seed])
        await again.load()
        assert again.get("acme") == ProviderSpec("acme", 3, ("http://b.example/",))
        assert again.provider_for("http://a.example/1.ts") is None
        assert [s.name for s in again.all()] == ["acme", "other"]
        assert await again.delete("other") is True
        assert await again.delete("other") is False
        await store.close()
