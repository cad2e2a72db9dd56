"""The persistence interface: JSON documents under (kind, key), and the cluster channel.

Everything that must survive a restart (stream definitions, webhooks, playlists,
providers, the URL-signing secret) is a JSON document under a (kind, key) pair. The
registry, webhooks, playlists and providers only ever see `Store`; SQLite (one
instance) and Redis (several instances) implement it. Kinds are free strings, so a new
owner of documents needs no change here.

With several instances a store also tells each instance what the others changed
(`Store.watch`): the owner of a kind reloads those keys, or everything when the store
was out of reach for a while (``keys is None``). `Cluster` is the rest of what
instances share: broadcast commands and each instance's published live figures.
"""

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

Doc = dict[str, Any]
# Keys of one kind that another instance changed; None: reload the whole kind.
Listener = Callable[[list[str] | None], Awaitable[None]]
# A command another instance broadcast (manual failover, deletion).
MessageHandler = Callable[[Doc], Awaitable[None]]


class Store(Protocol):
    """What the owners of documents need from persistence."""

    async def load(self, kind: str) -> dict[str, Doc]:
        """Every document of ``kind``, by key."""
        ...

    async def get_many(self, kind: str, keys: Iterable[str]) -> dict[str, Doc]:
        """The documents of ``kind`` under ``keys`` that exist."""
        ...

    async def put(self, kind: str, key: str, doc: Doc) -> None: ...

    async def put_many(self, kind: str, docs: Mapping[str, Doc]) -> None: ...

    async def delete(self, kind: str, keys: Iterable[str]) -> None: ...

    async def setdefault(self, kind: str, key: str, doc: Doc) -> Doc:
        """The document under ``key``; ``doc`` is stored first when there is none."""
        ...

    def watch(self, kind: str, listener: Listener) -> None:
        """Call ``listener`` when another instance changed documents of ``kind``."""
        ...

    async def close(self) -> None: ...


class Cluster(Protocol):
    """What instances sharing one store say to each other (absent with one instance)."""

    instance_id: str

    def on_message(self, handler: MessageHandler) -> None:
        """Call ``handler`` with each command another instance broadcast."""
        ...

    async def broadcast(self, message: Doc) -> None:
        """Send a command to every other instance (raises `StoreUnavailable`)."""
        ...

    async def publish_presence(self, snapshot: Doc, ttl: float) -> None:
        """Publish this instance's live figures; they vanish ``ttl`` s after the last."""
        ...

    async def peers(self) -> list[Doc]:
        """The live figures every other instance published, newest first."""
        ...

    async def claim(self, name: str, ttl: float) -> bool:
        """True for one instance per ``name`` within ``ttl`` seconds (a scheduled job)."""
        ...
