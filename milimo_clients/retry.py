"""When a call is tried again, built on tenacity (the same policy object for the sync and async clients).

Retried, with exponential backoff and jitter, and never past the call's total deadline:

* connection refused (the service is starting, or restarting);
* 429 (queue full / too many sessions) and 503 that says when to come back (the model is still loading):
  the wait is the answer's ``Retry-After`` (seconds or an HTTP date) when that is longer than the backoff.

Never retried: other 4xx (the request is wrong and stays wrong), a 503 without ``Retry-After`` (the model
failed to load for good), 5xx, timeouts (the service may be working on it), and, unless
``non_idempotent=True``, calls that change state (``/track/start``, ``/track/prompt``, ``/track/propagate``):
a retry there could start a second session or run a propagation twice.

tenacity rather than stamina: one dependency instead of two (stamina wraps tenacity), and tenacity's
``wait`` callback sees the failed attempt's exception, which is where ``Retry-After`` lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tenacity

from milimo_clients.errors import SamServiceBusy, SamServiceError, SamServiceNotRunning, SamServiceUnavailable


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; waits grow from ``backoff_initial_s`` to ``backoff_max_s``."""

    max_attempts: int = 10
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    jitter_s: float = 0.25
    non_idempotent: bool = False  # also retry calls that change state (off: a retry could duplicate work)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s or self.jitter_s < 0:
            raise ValueError("backoff: need 0 <= backoff_initial_s <= backoff_max_s and jitter_s >= 0")


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, SamServiceNotRunning | SamServiceBusy):
        return True
    return isinstance(exc, SamServiceUnavailable) and exc.retry_after_s is not None


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff with jitter, or the answer's ``Retry-After`` when that asks for longer."""

    def __init__(self, policy: RetryPolicy):
        self._backoff = tenacity.wait_exponential(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s
        ) + tenacity.wait_random(0, policy.jitter_s)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self._backoff(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after_s", None)
        return max(backoff, retry_after) if retry_after is not None else backoff


def tenacity_kwargs(policy: RetryPolicy | None, idempotent: bool, budget_s: float) -> dict[str, Any]:
    """Arguments of ``tenacity.Retrying`` / ``AsyncRetrying`` for one call with ``budget_s`` seconds in all.

    ``stop_before_delay`` stops as soon as the next wait would end past the budget, so a ``Retry-After``
    longer than the time left raises the last error at once instead of sleeping into the deadline.
    """
    attempts = 1
    if policy is not None and (idempotent or policy.non_idempotent):
        attempts = policy.max_attempts
    return dict(
        retry=tenacity.retry_if_exception(is_retryable),
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(budget_s),
        wait=_WaitRetryAfter(policy or NO_RETRY),
        reraise=True,
    )


__all__ = ["NO_RETRY", "RetryPolicy", "SamServiceError", "is_retryable", "tenacity_kwargs"]
