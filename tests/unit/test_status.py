"""The job state machine: every transition allowed or refused, and the status that follows each attempt."""

from __future__ import annotations

import itertools

import pytest

from service.domain.status import (
    ALLOWED_TRANSITIONS,
    FINAL_JOB_STATUSES,
    REOPENABLE_STATUSES,
    RETRIED_OUTCOMES,
    STATUS_WHEN_ATTEMPT_STARTS,
    STATUSES_WITH_ATTEMPT_IN_FLIGHT,
    AttemptOutcome,
    IllegalTransitionError,
    JobStatus,
    check_transition,
    status_after_attempt,
    status_when_reopened,
    status_when_withdrawn,
)

Q, R, T, D, C, X = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.RETRIED,
    JobStatus.COMPLETED,
    JobStatus.CRASHED,
    JobStatus.CANCELLED,
)

# The lifecycle of a job, written out independently of the table under test: a queued job starts
# (or is cancelled); a job with an attempt in flight completes, is retried, crashes or is cancelled; a retried
# job may be retried again; a first attempt whose program never ran is withdrawn (running → queued); final
# statuses go nowhere.
EXPECTED_TRANSITIONS = {
    (Q, R),
    (Q, X),
    (R, Q),
    (R, D),
    (R, T),
    (R, C),
    (R, X),
    (T, T),
    (T, D),
    (T, C),
    (T, X),
}
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))
# Every ending but success and a cancel counts as a failure of the attempt, and is retried while attempts remain.
FAILED_ENDINGS = [
    AttemptOutcome.FAILED,
    AttemptOutcome.KILLED,
    AttemptOutcome.SPAWN_FAILED,
    AttemptOutcome.LOST,
    AttemptOutcome.TIMED_OUT,
]


def _pair_id(pair: tuple[JobStatus, JobStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_the_table_covers_every_status_and_matches_the_documented_lifecycle() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    table = {(current, proposed) for current, targets in ALLOWED_TRANSITIONS.items() for proposed in targets}
    assert table == EXPECTED_TRANSITIONS


@pytest.mark.parametrize("pair", sorted(EXPECTED_TRANSITIONS), ids=_pair_id)
def test_allowed_transition_passes(pair: tuple[JobStatus, JobStatus]) -> None:
    current, proposed = pair
    check_transition(current, proposed)  # must not raise


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if p not in EXPECTED_TRANSITIONS], ids=_pair_id)
def test_disallowed_transition_raises_naming_both_statuses(pair: tuple[JobStatus, JobStatus]) -> None:
    current, proposed = pair
    with pytest.raises(IllegalTransitionError) as raised:
        check_transition(current, proposed)
    assert raised.value.current is current
    assert raised.value.proposed is proposed
    assert repr(current.value) in str(raised.value)
    assert repr(proposed.value) in str(raised.value)


def test_only_a_running_job_returns_to_queued() -> None:
    assert [status for status, targets in ALLOWED_TRANSITIONS.items() if Q in targets] == [R]


def test_a_withdrawn_first_attempt_puts_the_job_back_in_the_queue() -> None:
    assert status_when_withdrawn(R, 1) is Q


@pytest.mark.parametrize("attempt_number", [2, 3, 5])
def test_a_withdrawn_later_attempt_leaves_the_job_retried(attempt_number: int) -> None:
    assert status_when_withdrawn(T, attempt_number) is T


@pytest.mark.parametrize(("current", "attempt_number"), [(R, 1), (T, 2)])
def test_a_withdrawn_attempt_of_a_job_whose_cancel_was_asked_for_cancels_it(
    current: JobStatus, attempt_number: int
) -> None:
    assert status_when_withdrawn(current, attempt_number, cancel_requested=True) is X


@pytest.mark.parametrize("current", [Q, D, C, X])
def test_only_a_job_with_an_attempt_in_flight_can_have_one_withdrawn(current: JobStatus) -> None:
    with pytest.raises(IllegalTransitionError):
        status_when_withdrawn(current, 2)


def test_a_first_attempt_of_a_retried_job_cannot_be_withdrawn_to_queued() -> None:
    with pytest.raises(IllegalTransitionError):
        status_when_withdrawn(T, 1)


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_final_statuses_are_exactly_those_without_a_way_out(status: JobStatus) -> None:
    assert status.is_final == (status in {D, C, X})
    assert status.is_final == (not ALLOWED_TRANSITIONS[status])
    assert (status in FINAL_JOB_STATUSES) == status.is_final


def test_starting_an_attempt_is_a_legal_transition_from_every_claimable_status() -> None:
    assert set(STATUS_WHEN_ATTEMPT_STARTS) == {Q, T}
    for before, after in STATUS_WHEN_ATTEMPT_STARTS.items():
        check_transition(before, after)
        assert after in STATUSES_WITH_ATTEMPT_IN_FLIGHT


def test_only_succeeded_counts_as_success() -> None:
    assert [outcome for outcome in AttemptOutcome if outcome.is_success] == [AttemptOutcome.SUCCEEDED]
    # No outcome is left out of the tests below: each is a success, a failure, a cancel, or still running.
    assert set(AttemptOutcome) == {
        AttemptOutcome.SUCCEEDED,
        AttemptOutcome.RUNNING,
        AttemptOutcome.CANCELLED,
        *FAILED_ENDINGS,
    }


def test_every_failure_is_retried_and_nothing_else_is() -> None:
    assert set(FAILED_ENDINGS) == RETRIED_OUTCOMES


# --- status_after_attempt -------------------------------------------------------------------------------------


@pytest.mark.parametrize("current", [R, T], ids=str)
@pytest.mark.parametrize(("attempt_number", "max_attempts"), [(1, 1), (1, 2), (2, 2), (3, 5)])
def test_success_completes_the_job_on_any_attempt(current: JobStatus, attempt_number: int, max_attempts: int) -> None:
    assert status_after_attempt(current, AttemptOutcome.SUCCEEDED, attempt_number, max_attempts) is D


@pytest.mark.parametrize("outcome", FAILED_ENDINGS, ids=str)
@pytest.mark.parametrize("current", [R, T], ids=str)
@pytest.mark.parametrize(("attempt_number", "max_attempts"), [(1, 2), (1, 5), (4, 5)])
def test_failure_with_attempts_remaining_is_retried(
    outcome: AttemptOutcome, current: JobStatus, attempt_number: int, max_attempts: int
) -> None:
    assert status_after_attempt(current, outcome, attempt_number, max_attempts) is T


@pytest.mark.parametrize("outcome", FAILED_ENDINGS, ids=str)
@pytest.mark.parametrize(("current", "attempt_number", "max_attempts"), [(R, 1, 1), (T, 2, 2), (T, 5, 5)])
def test_failure_of_the_last_allowed_attempt_crashes_the_job(
    outcome: AttemptOutcome, current: JobStatus, attempt_number: int, max_attempts: int
) -> None:
    assert status_after_attempt(current, outcome, attempt_number, max_attempts) is C


def test_default_policy_retries_a_failed_job_exactly_once() -> None:
    # MAX_ATTEMPTS defaults to 2: the first failure is retried, the second one is final.
    after_first = status_after_attempt(R, AttemptOutcome.FAILED, 1, 2)
    after_second = status_after_attempt(after_first, AttemptOutcome.FAILED, 2, 2)
    assert (after_first, after_second) == (T, C)


def test_an_attempt_that_still_runs_has_no_outcome_to_apply() -> None:
    with pytest.raises(ValueError, match="still running"):
        status_after_attempt(R, AttemptOutcome.RUNNING, 1, 2)


@pytest.mark.parametrize("current", [Q, D, C, X], ids=str)
@pytest.mark.parametrize("outcome", [AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED], ids=str)
def test_an_outcome_cannot_move_a_job_without_an_attempt_in_flight(current: JobStatus, outcome: AttemptOutcome) -> None:
    with pytest.raises(IllegalTransitionError):
        status_after_attempt(current, outcome, 1, 2)


# --- cancelling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("current", [R, T], ids=str)
@pytest.mark.parametrize(("attempt_number", "max_attempts"), [(1, 1), (1, 5)])
def test_a_cancelled_attempt_cancels_the_job_even_with_attempts_left(
    current: JobStatus, attempt_number: int, max_attempts: int
) -> None:
    assert status_after_attempt(current, AttemptOutcome.CANCELLED, attempt_number, max_attempts) is X


@pytest.mark.parametrize("outcome", FAILED_ENDINGS, ids=str)
def test_any_failure_of_a_job_whose_cancel_was_asked_for_cancels_it(outcome: AttemptOutcome) -> None:
    assert status_after_attempt(R, outcome, 1, 5, cancel_requested=True) is X


def test_a_success_that_beat_the_cancel_completes_the_job() -> None:
    assert status_after_attempt(R, AttemptOutcome.SUCCEEDED, 1, 2, cancel_requested=True) is D


# --- running a final job again ----------------------------------------------------------------------------------


def test_only_crashed_and_cancelled_jobs_can_be_run_again() -> None:
    assert {C, X} == REOPENABLE_STATUSES
    for status in set(JobStatus) - REOPENABLE_STATUSES:
        with pytest.raises(IllegalTransitionError):
            status_when_reopened(status, 1)


@pytest.mark.parametrize("current", [C, X], ids=str)
def test_a_job_run_again_after_attempts_is_retried(current: JobStatus) -> None:
    assert status_when_reopened(current, 2) is T


def test_a_job_cancelled_before_any_attempt_is_queued_again() -> None:
    assert status_when_reopened(X, 0) is Q
