"""What went wrong with the database, in the storage layer's own terms: callers never import a driver to ask."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc


class DatabaseUnavailableError(Exception):
    """The database could not be reached, or lost the connection mid-way: the same call may succeed later.

    Raised from the driver's own error (its `__cause__`), which says what happened.
    """


# SQLSTATEs after which the same statement, tried again later (on a new connection if need be), may succeed.
# Whole classes: 08 connection exception, 53 insufficient resources (too many connections, out of memory or disk).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: terminated by pg_terminate_backend or a fast shutdown
        "57P02",  # crash_shutdown: another backend crashed and the server is resetting
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout: the session was ended
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)
# The session ends with these: the connection they arrived on is no use any more.
_CONNECTION_ENDING_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})
QUERY_CANCELED = "57014"
# query_canceled is ours to retry only when our own statement_timeout fired, not when someone cancelled the query.
_STATEMENT_TIMEOUT_MESSAGE = "statement timeout"


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps: SQLAlchemy's `DBAPIError.orig` is the dialect's adapted error, whose `.orig`
    is asyncpg's own."""
    chain = [error]
    while (inner := getattr(chain[-1], "orig", None)) is not None and isinstance(inner, BaseException):
        if inner in chain:
            break
        chain.append(inner)
    return chain


def describe(error: BaseException) -> str:
    """The driver's own error, named by its class: `CannotConnectNowError: the database system is starting up`,
    not SQLAlchemy's wrapper around it."""
    inner = _chain(error.__cause__ if isinstance(error, DatabaseUnavailableError) and error.__cause__ else error)[-1]
    return f"{inner.__class__.__name__}: {inner}"


def _sqlstate(error: BaseException) -> str | None:
    for link in _chain(error):
        sqlstate = getattr(link, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
    return None


def _is_broken_connection(link: BaseException) -> bool:
    """The connection itself failed: refused, reset, timed out, closed under us, or (pool) none came in time."""
    if isinstance(link, OSError | exc.TimeoutError | exc.DisconnectionError):
        # OSError: refused, reset, unreachable, a Unix socket that is gone; TimeoutError (an OSError): connect or
        # command timeout; SQLAlchemy's TimeoutError: no pooled connection came free in time.
        return True
    if isinstance(link, asyncpg.InterfaceError):
        return "connection is closed" in str(link) or "connection was closed" in str(link)
    return isinstance(link, exc.DBAPIError) and link.connection_invalidated


def is_transient(error: BaseException) -> bool:
    """Whether trying the same call again later may succeed: the server or the network had a hiccup, the server is
    starting, stopping or overloaded, or the transaction lost a race that a retry can win."""
    if isinstance(error, DatabaseUnavailableError):
        return True
    if any(_is_broken_connection(link) for link in _chain(error)):
        return True
    sqlstate = _sqlstate(error)
    if sqlstate is None:
        return False
    if sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES) or sqlstate in _TRANSIENT_SQLSTATES:
        return True
    return sqlstate == QUERY_CANCELED and any(_STATEMENT_TIMEOUT_MESSAGE in str(link) for link in _chain(error))


def ends_the_connection(error: BaseException) -> bool:
    """Whether the connection the error came on (and, likely, every other one to the same server) is no use any
    more: the server went away, restarted, ended our session, or stopped answering."""
    if any(_is_broken_connection(link) for link in _chain(error)):
        return True
    sqlstate = _sqlstate(error)
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _CONNECTION_ENDING_SQLSTATES)


def as_sqlalchemy_error(error: BaseException) -> BaseException:
    """The SQLAlchemy exception that the same failure raises through the engine, so that a statement sent on the
    driver connection fails the way one sent through SQLAlchemy does."""
    if isinstance(error, OSError | TimeoutError):
        return error
    if isinstance(error, asyncpg.InterfaceError):
        return exc.InterfaceError(None, None, error)
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError):
        return exc.OperationalError(None, None, error)  # the server went away, or is shutting down
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return exc.IntegrityError(None, None, error)
    return exc.DBAPIError(None, None, error)
