"""Domain errors: each names the rule that was broken, the field, and the product's error code.

The API layer maps the class to a gRPC status code and `reason` to `google.rpc.ErrorInfo`;
nothing here knows about gRPC.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request that cannot be carried out, with the original product's error code as reason."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        field: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.metadata = dict(metadata or {})
        # When retrying makes sense, and after how long (google.rpc.RetryInfo).
        self.retry_after_seconds = retry_after_seconds


class InvalidArgument(DomainError):
    """The request itself is malformed or breaks a size or shape rule."""


class NotFound(DomainError):
    """A named resource does not exist (in this region)."""


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state that allows it."""


class ResourceExhausted(DomainError):
    """A quota is used up."""


class AlreadyExists(DomainError):
    """A conflicting resource exists (e.g. an idempotency token reused with another request)."""


class Unauthenticated(DomainError):
    """No credentials, or credentials that are not valid (unknown, wrong or revoked)."""


class PermissionDenied(DomainError):
    """Valid credentials that do not allow this call."""
