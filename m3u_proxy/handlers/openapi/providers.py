"""OpenAPI description of provider accounts: their shapes and the ``/providers`` paths."""

from m3u_proxy.handlers.openapi.common import _json, _op, _path_id
from m3u_proxy.handlers.openapi.types import (
    INTEGER,
    NUMBER,
    PROVIDER_NAME,
    PROVIDER_NAME_PATTERN,
    STRINGS,
    Schema,
    array,
    obj,
    ref,
)
from m3u_proxy.providers.model import MAX_PREFIXES, MAX_SLOT_WAIT, ON_LIMIT

PROVIDER = _path_id(
    "name", "The provider's name.", {"type": "string", "pattern": PROVIDER_NAME_PATTERN}
)


def _provider_definition() -> Schema:
    schema = obj(
        {},
        {
            "max_connections": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "simultaneous connections the account allows; null = no limit",
            },
            "match": {
                "type": ["array", "null"],
                "items": {
                    "type": "string",
                    "description": "scheme://host[:port][/path]; the longest prefix wins",
                },
                "maxItems": MAX_PREFIXES,
            },
            "on_limit": {"enum": list(ON_LIMIT), "default": "reject"},
            "slot_wait": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_SLOT_WAIT,
                "default": 2.0,
                "description": "seconds a viewer waits for a slot before on_limit applies",
            },
        },
    )
    schema["description"] = "Unknown fields are ignored."
    schema["examples"] = [
        {
            "max_connections": 1,
            "match": ["http://provider.example:8080/live/user1/"],
            "on_limit": "reject",
            "slot_wait": 2,
        }
    ]
    return schema


def _provider() -> Schema:
    return obj(
        {
            "name": PROVIDER_NAME,
            "max_connections": {"type": ["integer", "null"]},
            "match": STRINGS,
            "on_limit": {"enum": list(ON_LIMIT)},
            "slot_wait": NUMBER,
            "in_use": {**INTEGER, "description": "slots held now"},
            "viewers": {**INTEGER, "description": "players those slots serve"},
            "rejected_total": INTEGER,
            "preempted_total": INTEGER,
        }
    )


def provider_schemas() -> dict[str, Schema]:
    return {
        "ProviderDefinition": _provider_definition(),
        "Provider": _provider(),
        "ProviderList": obj({"providers": array(ref("Provider"))}),
    }


def provider_paths() -> dict[str, Schema]:
    provider = ref("Provider")
    return {
        "/providers": {
            "get": _op(
                "list_providers",
                "providers",
                "Every provider account with its slots in use.",
                {200: _json("The providers.", ref("ProviderList"))},
            )
        },
        "/providers/{name}": {
            "put": _op(
                "put_provider",
                "providers",
                "Define a provider account (connection limit, URL prefixes), or update it.",
                {200: _json("Updated.", provider), 201: _json("Defined.", provider)},
                params=[PROVIDER],
                body="ProviderDefinition",
                errors=(422,),
            ),
            "get": _op(
                "get_provider",
                "providers",
                "One provider account with its slots in use.",
                {200: _json("The provider.", provider)},
                params=[PROVIDER],
                errors=(404,),
            ),
            "delete": _op(
                "delete_provider",
                "providers",
                "Forget a provider: its URLs play without a limit from now on.",
                {200: _json("Deleted.", ref("Message"))},
                params=[PROVIDER],
                errors=(404,),
            ),
        },
    }
