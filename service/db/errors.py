"""What went wrong with the database, in the storage layer's own terms: callers never import a driver to ask."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc


class DatabaseUnavailableError(Exception):
    """The database could not be reached, or lost the connection mid-way: the same call may succeed later.

    Raised from the driver's own error (its `__cause__`), which says what happened.
    """


def is_transient(error: BaseException) -> bool:
    """Whether trying the same call again later may succeed: the server or the network had a hiccup."""
    return isinstance(error, exc.OperationalError | exc.InterfaceError | OSError | TimeoutError)


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
