"""How long a job waits before its next attempt: exponential backoff with full jitter.

After attempt n fails, the next one waits a uniformly random time in [0, min(cap, base * 2^(n-1))]. The random
part ("full jitter") spreads the retries of jobs that failed together — say, while a database they need was down —
so that they do not all come back at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2^62 times any sane base is far above any cap; the bound keeps the float finite for absurd attempt numbers.
_MAX_EXPONENT = 62
_JITTER = random.Random()  # noqa: S311  (jitter, not security)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    """The longest wait after the first attempt (RETRY_BACKOFF_BASE_SECONDS)."""
    cap_seconds: float
    """No wait is ever longer (RETRY_BACKOFF_CAP_SECONDS)."""

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError(
                f"backoff base ({self.base_seconds} s) and cap ({self.cap_seconds} s) must not be negative"
            )

    def bound_seconds(self, attempt_number: int) -> float:
        """The longest wait after attempt `attempt_number` (1-based) failed: base * 2^(n-1), at most the cap."""
        if attempt_number < 1:
            raise ValueError(f"attempt_number is {attempt_number}; attempts are numbered from 1")
        exponent = min(attempt_number - 1, _MAX_EXPONENT)
        return min(self.cap_seconds, self.base_seconds * 2.0**exponent)

    def delay_seconds(self, attempt_number: int, rng: random.Random | None = None) -> float:
        """A wait drawn uniformly from [0, bound_seconds(attempt_number)]."""
        return (rng or _JITTER).uniform(0.0, self.bound_seconds(attempt_number))


NO_WAIT = RetryPolicy(base_seconds=0.0, cap_seconds=0.0)
"""Retry at once (tests, and callers that record outcomes of jobs that will not be retried)."""
