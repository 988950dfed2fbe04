"""What the supervisor tells an observer (the service's metrics) as it claims, starts and ends attempts."""

from __future__ import annotations

from typing import Protocol

from service.domain.status import AttemptOutcome

UNKNOWN_PROGRAM = "unknown"
"""The program name of an attempt adopted after a restart: its claim, which named the program, was a past life's."""


class SupervisorObserver(Protocol):
    """Called on the event loop, never awaited: an implementation must be quick and must not raise."""

    def claim_round(self, seconds: float, claimed: int) -> None:
        """One claim query made: how long its round trip took and how many attempts it took."""

    def attempt_started(self, program_name: str, waited_seconds: float | None) -> None:
        """A program was let run; `waited_seconds` since its attempt was due (None when unknown)."""

    def attempt_finished(self, program_name: str, outcome: AttemptOutcome, duration_seconds: float | None) -> None:
        """An attempt's ending was recorded in the database."""

    def database_error(self) -> None:
        """A statement failed because the database could not be reached (it is retried)."""


class NoObserver:
    """The observer of a supervisor that was given none."""

    def claim_round(self, seconds: float, claimed: int) -> None:
        del seconds, claimed

    def attempt_started(self, program_name: str, waited_seconds: float | None) -> None:
        del program_name, waited_seconds

    def attempt_finished(self, program_name: str, outcome: AttemptOutcome, duration_seconds: float | None) -> None:
        del program_name, outcome, duration_seconds

    def database_error(self) -> None:
        pass
