"""Start-up messages about bad settings: one line per value, naming the variable, never showing a secret."""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_settings import SettingsError

# Settings whose value is a secret: a start-up error names them but never shows what was given.
SECRET_SETTINGS = frozenset({"API_TOKEN"})
# `scheme://user:password@`: the password of a URL, masked wherever a URL is shown.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:)[^/@\s]*@")


def mask_url_password(text: str) -> str:
    """Any `scheme://user:password@` in the text with the password replaced by `***` (works on URLs that do not
    parse, unlike SQLAlchemy's redaction)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _shown_input(variable: str, value: object) -> str:
    if variable in SECRET_SETTINGS:
        return "a value, hidden"
    return mask_url_password(repr(value))


# pydantic-settings names the field in its message when a value meant as JSON (a list) does not parse.
_SETTINGS_ERROR_FIELD = re.compile(r'field "(?P<name>\w+)"')


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line per bad value, naming the environment variable, for a start-up failure message."""
    if isinstance(error, SettingsError):
        match = _SETTINGS_ERROR_FIELD.search(str(error))
        variable = match.group("name").upper() if match else "settings"
        reason = mask_url_password(str(error.__cause__ or error))
        return f'invalid configuration:\n  {variable}: {reason} (a list is written as JSON, e.g. ["A", "B"])'
    lines = []
    for problem in error.errors():
        variable = "_".join(str(part) for part in problem["loc"][:1]).upper() or "settings"
        lines.append(f"{variable}: {problem['msg']} (got {_shown_input(variable, problem.get('input'))})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
