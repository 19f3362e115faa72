"""Rate control of an invocation: how many targets run at once, how many errors stop it.

Both take a number or a percentage of the targets, as AWS Run Command's MaxConcurrency and
MaxErrors do: `max_concurrency` "10" or "25%" (at least 1), `max_errors` "0" or "10%".
Targets past the concurrency wait PENDING, undelivered, and start as others end. Once more
records have ended in error (FAILED, TIMEOUT, ERROR, INVALID, ABORTED) than `max_errors`
allows, the targets still waiting become CANCELLED (`MaxErrorsExceeded`); those already
running go on.
"""

from __future__ import annotations

import re

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.status import ExecutionState

_LIMIT = re.compile(r"(\d{1,9})(%?)")

ERROR_STATES = frozenset(
    {
        ExecutionState.FAILED,
        ExecutionState.TIMEOUT,
        ExecutionState.ERROR,
        ExecutionState.INVALID,
        ExecutionState.ABORTED,
    }
)


def _parse(text: str, targets: int, field: str, reason: str, minimum: int) -> int | None:
    if not text:
        return None
    match = _LIMIT.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(
            reason,
            f"{field}: {text[:32]!r} is neither a number nor a percentage (like 10 or 25%)",
            field=field,
        )
    value = int(match.group(1))
    if match.group(2):
        if value > 100:
            raise InvalidArgument(reason, f"{field}: {value}% is more than 100%", field=field)
        value = value * targets // 100
    elif value < minimum:
        raise InvalidArgument(reason, f"{field}: must be at least {minimum}", field=field)
    return max(minimum, value)


def parse_max_concurrency(text: str, targets: int) -> int | None:
    """How many targets may run at once (None: all)."""
    return _parse(text, targets, "max_concurrency", reasons.INVALID_MAX_CONCURRENCY, 1)


def parse_max_errors(text: str, targets: int) -> int | None:
    """How many errors are tolerated before the waiting targets are cancelled (None: any)."""
    return _parse(text, targets, "max_errors", reasons.INVALID_MAX_ERRORS, 0)


def released(max_concurrency: int | None, active: int, waiting: int) -> int:
    """How many waiting targets may start now."""
    if max_concurrency is None:
        return waiting
    return max(0, min(waiting, max_concurrency - active))


def error_budget_spent(max_errors: int | None, errors: int) -> bool:
    return max_errors is not None and errors > max_errors
