"""The data shapes of the HTTP API as JSON Schema (OpenAPI 3.1 ``components``).

Plain data: the base types and helpers here, the shapes in `shapes`, the table in
`components`; the paths are in the `paths_*` modules: one entry per
request body or response object of API.md, named as API.md names them (StreamStat,
ClientStat, ...). Objects list the fields a response always carries as ``required`` and
allow more, so a client written against this document survives new fields.
"""

from typing import Any

from m3u_proxy.checks import MAX_URL_LENGTH

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, `Z`"}
MAYBE_STRING: Schema = {"type": ["string", "null"]}
MAYBE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
MAYBE_NUMBER: Schema = {"type": ["number", "null"]}
STRINGS: Schema = {"type": "array", "items": STRING}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
HTTP_URL: Schema = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "description": "an absolute http:// or https:// URL with a host",
}
HEADERS_IN: Schema = {
    # An empty array too: PHP clients (m3u-editor) encode an empty map as [].
    "type": ["object", "null", "array"],
    "maxItems": 0,
    "additionalProperties": {"type": "string", "description": "no CR, LF or NUL"},
    "description": "extra upstream request headers; a CR/LF/NUL in a value is a 422",
}
MD5_ID: Schema = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
PROVIDER_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PROVIDER_NAME: Schema = {"type": "string", "pattern": PROVIDER_NAME_PATTERN}
SILENCE_SCHEMAS: dict[type, Schema] = {bool: BOOLEAN, float: NUMBER}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object schema whose ``required`` fields are always present."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}
