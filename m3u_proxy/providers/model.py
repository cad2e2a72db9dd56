"""Provider definitions: validation, persistence and longest-prefix URL matching.

A provider is an account at an IPTV service (API.md "Providers"): a name, the URL
prefixes its streams start with, how many connections it allows and what to do when
they are all in use. Definitions come from ``PUT /providers/{name}`` (persisted in the
`Store` under kind ``provider``) and from ``[[providers]]`` tables of the TOML config
(read-only seeds; an API definition of the same name overrides one from the config).

A URL belongs to the provider with the longest ``match`` prefix that starts it, so two
accounts on one host are told apart by their credential path; failing that, to the
stream's ``provider`` field; else to none (unlimited). Matching is sans-io.
"""

from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from m3u_proxy.errors import ValidationFailed
from m3u_proxy.store.base import Doc, Store
from m3u_proxy.streams.registry import check_provider_name

KIND = "provider"
OnLimit = Literal["reject", "preempt_oldest"]
ON_LIMIT: tuple[OnLimit, ...] = ("reject", "preempt_oldest")
DEFAULT_SLOT_WAIT = 2.0
MAX_SLOT_WAIT = 60.0
MAX_PREFIXES = 100


def check_prefix(field: str, value: Any) -> str:
    """``scheme://host[:port][/path]``: http(s), a host, no query, fragment or blanks."""
    if not isinstance(value, str) or not value:
        raise ValidationFailed(field, "must be a non-empty URL prefix")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationFailed(field, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number in range raises ValueError
    except ValueError as exc:
        raise ValidationFailed(field, f"is not a valid URL prefix ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(field, "must start with http:// or https:// and a host")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValidationFailed(field, "must be scheme://host[:port][/path], without ? or #")
    return value


@attrs.frozen
class ProviderSpec:
    """One provider account, as defined by the API or the config file."""

    name: str
    max_connections: int | None = None  # None: counted, never limited
    match: tuple[str, ...] = ()
    on_limit: OnLimit = "reject"
    slot_wait: float = DEFAULT_SLOT_WAIT

    def to_doc(self) -> Doc:
        return {
            "name": self.name,
            "max_connections": self.max_connections,
            "match": list(self.match),
            "on_limit": self.on_limit,
            "slot_wait": self.slot_wait,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> "ProviderSpec":
        return cls(
            name=doc["name"],
            max_connections=doc.get("max_connections"),
            match=tuple(doc.get("match", ())),
            on_limit=doc.get("on_limit", "reject"),
            slot_wait=float(doc.get("slot_wait", DEFAULT_SLOT_WAIT)),
        )


def parse_provider(name: str, body: Any, where: str = "") -> ProviderSpec:
    """Validate a ``PUT /providers/{name}`` body (or a config table); 422 names the field."""

    def field(key: str) -> str:
        return f"{where}{key}"

    check_provider_name(field("name"), name)
    if not isinstance(body, Mapping):
        raise ValidationFailed(where.rstrip(".") or "body", "must be an object")
    limit = body.get("max_connections")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationFailed(field("max_connections"), "must be an integer >= 1, or null")
    raw_match = body.get("match")
    raw_match = [] if raw_match is None else raw_match
    if not isinstance(raw_match, list):
        raise ValidationFailed(field("match"), "must be a list of URL prefixes")
    if len(raw_match) > MAX_PREFIXES:
        raise ValidationFailed(field("match"), f"at most {MAX_PREFIXES} prefixes")
    match = tuple(check_prefix(field(f"match[{i}]"), p) for i, p in enumerate(raw_match))
    on_limit = body.get("on_limit", "reject")
    if on_limit not in ON_LIMIT:
        raise ValidationFailed(field("on_limit"), f"must be one of {', '.join(ON_LIMIT)}")
    wait = body.get("slot_wait", DEFAULT_SLOT_WAIT)
    number = isinstance(wait, int | float) and not isinstance(wait, bool)
    if not number or not 0 <= wait <= MAX_SLOT_WAIT:
        raise ValidationFailed(field("slot_wait"), f"must be seconds in [0, {MAX_SLOT_WAIT:g}]")
    return ProviderSpec(name, limit, tuple(dict.fromkeys(match)), on_limit, float(wait))


def _key(prefix: str) -> str:
    """Scheme and host compare case-insensitively; the path (credentials) as written."""
    parts = urlsplit(prefix)
    head = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    return head + prefix[len(parts.scheme) + 3 + len(parts.netloc) :]


def _starts(url: str, prefix: str) -> bool:
    """``prefix`` starts ``url`` at a boundary: ``.../user1`` does not claim ``.../user10``."""
    if not url.startswith(prefix):
        return False
    return len(url) == len(prefix) or prefix.endswith("/") or url[len(prefix)] in "/?#"


class Providers:
    """Every provider definition: config seeds overlaid by the store, and URL matching."""

    def __init__(self, store: Store, seeds: Iterable[ProviderSpec] = ()) -> None:
        self._store = store
        self._seeds = {spec.name: spec for spec in seeds}
        self._saved: dict[str, ProviderSpec] = {}
        self._specs: dict[str, ProviderSpec] = dict(self._seeds)
        self._prefixes: list[tuple[str, str]] = []
        self._index()

    async def load(self) -> None:
        docs = await self._store.load(KIND)
        self._saved = {key: ProviderSpec.from_doc(doc) for key, doc in docs.items()}
        self._index()

    async def reload(self, keys: list[str] | None) -> None:
        """Take what another instance changed from the store (None: everything)."""
        if keys is None:
            await self.load()
            return
        docs = await self._store.get_many(KIND, keys)
        for key in keys:
            if key in docs:
                self._saved[key] = ProviderSpec.from_doc(docs[key])
            else:  # deleted there: gone here too, a config seed included (as `delete`)
                self._saved.pop(key, None)
                self._seeds.pop(key, None)
        self._index()

    def _index(self) -> None:
        self._specs = {**self._seeds, **self._saved}
        pairs = [(_key(p), s.name) for s in self._specs.values() for p in s.match]
        # Longest first: the first prefix that starts a URL is the most specific one.
        self._prefixes = sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)

    def get(self, name: str) -> ProviderSpec | None:
        return self._specs.get(name)

    def all(self) -> list[ProviderSpec]:
        return sorted(self._specs.values(), key=lambda spec: spec.name)

    async def save(self, spec: ProviderSpec) -> bool:
        """Persist, then publish; True when the name is new."""
        created = spec.name not in self._specs
        await self._store.put(KIND, spec.name, spec.to_doc())
        self._saved[spec.name] = spec
        self._index()
        return created

    async def delete(self, name: str) -> bool:
        """Forget a provider (a config seed comes back only at the next start)."""
        if name not in self._specs:
            return False
        await self._store.delete(KIND, [name])
        self._saved.pop(name, None)
        self._seeds.pop(name, None)
        self._index()
        return True

    def provider_for(self, url: str, fallback: str | None = None) -> ProviderSpec | None:
        """The provider a URL belongs to: longest matching prefix, else ``fallback``."""
        key = _key(url) if self._prefixes else url
        for prefix, name in self._prefixes:
            if _starts(key, prefix):
                return self._specs[name]
        return self._specs.get(fallback) if fallback else None
