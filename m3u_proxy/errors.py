"""The error hierarchy: domain errors that the error middleware maps to ``{"detail": ...}``."""


class ConfigError(Exception):
    """Configuration cannot be used; the CLI prints it as one line and exits with status 2."""


class StoreError(Exception):
    """The persistent store cannot be opened, read or written."""


class ApiError(Exception):
    """An error a handler reports to the HTTP client with a status and a human sentence."""

    status = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class ValidationFailed(ApiError):
    """A field failed validation (422); ``field`` names it, and the detail says so too."""

    status = 422

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ServiceUnavailable(ApiError):
    status = 503


class ProviderFull(ServiceUnavailable):
    """Every connection of a provider account is in use and its policy says reject."""

    def __init__(self, name: str, limit: int, retry_after: int) -> None:
        super().__init__(
            f"provider {name} is at its limit of {limit} connections",
            {"Retry-After": str(retry_after)},
        )
        self.provider = name


class StoreUnavailable(ServiceUnavailable, StoreError):
    """The shared store (Redis) is out of reach: a request answers 503, start-up exits 2."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the shared store (Redis) is unavailable, nothing was changed; retry when it is back"
            + (f" ({detail})" if detail else "")
        )


class UpstreamFailed(ApiError):
    """No upstream in the chain produced a usable answer before any byte was sent.

    ``reason`` is the last failure's reason in the one vocabulary of failure reasons
    (`m3u_proxy.streams.failover.REASONS`), for events and logs.
    """

    status = 502

    def __init__(self, detail: str, reason: str = "connect_error") -> None:
        super().__init__(detail)
        self.reason = reason


class UpstreamRefused(UpstreamFailed):
    """Every URL of the chain gave a definite 4xx: the player gets that status (404 stays
    404), as it would going direct (issue #11)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail, "http_status")
        self.status = status


class UpstreamTimedOut(UpstreamFailed):
    status = 504
