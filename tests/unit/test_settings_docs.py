"""The settings are described once, in the fields of `Settings`; the files that list them must agree with it.

The configuration table of docs/operations.md is generated from `Settings.model_fields` (name, default and
`description=`) and committed between two markers; the test fails when the committed table differs from the
generated one. After changing a setting, rewrite the table with:

    .venv/bin/python -m tests.unit.test_settings_docs

.env.example must mention every setting and no other name, each with its default where the default is a value.
"""

from __future__ import annotations

import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
TABLE_START = "<!-- settings-table:start (generated from Settings: python -m tests.unit.test_settings_docs) -->"
TABLE_END = "<!-- settings-table:end -->"

# `NAME=value` or `# NAME=value`: a setting mentioned in .env.example, with the value shown.
_ENV_LINE = re.compile(r"^[ \t]*#?[ \t]*([A-Z][A-Z0-9_]*)[ \t]*=(.*)$", re.MULTILINE)


def default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def env_value(value: Any) -> str | None:
    """The default as a `.env` line writes it; None when the default is "unset" or an empty collection."""
    if value is None or (isinstance(value, dict | tuple | list) and not value):
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def default_cell(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict | tuple | list):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    return f"`{env_value(value)}`"


def settings_table() -> str:
    """The configuration reference: one row per field of `Settings`, in their order."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name.upper()}` | {default_cell(default_of(field))} | {description} |")
    return "\n".join(lines)


def committed_table(text: str) -> str:
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    assert start != -1, f"{OPERATIONS.name} has no line {TABLE_START!r}"
    assert end > start, f"{OPERATIONS.name} has no line {TABLE_END!r} after the start marker"
    return text[start + len(TABLE_START) : end].strip("\n")


def test_every_setting_has_a_description() -> None:
    undescribed = sorted(name.upper() for name, field in Settings.model_fields.items() if not field.description)
    assert not undescribed, f"Settings fields without description=: {undescribed}"


def test_the_configuration_table_is_the_one_generated_from_settings() -> None:
    committed = committed_table(OPERATIONS.read_text(encoding="utf-8"))
    assert committed == settings_table(), (
        f"the configuration table of {OPERATIONS.relative_to(PROJECT_ROOT)} is not the one Settings gives; "
        "regenerate it with: .venv/bin/python -m tests.unit.test_settings_docs"
    )


def test_env_example_names_every_setting_and_nothing_else() -> None:
    mentioned = {name for name, _value in _ENV_LINE.findall(ENV_EXAMPLE.read_text(encoding="utf-8"))}
    settings = {name.upper() for name in Settings.model_fields}
    assert sorted(settings - mentioned) == [], ".env.example does not mention every setting"
    assert sorted(mentioned - settings) == [], ".env.example mentions names that are not settings"


def test_env_example_shows_each_default() -> None:
    shown = {name: value.strip() for name, value in _ENV_LINE.findall(ENV_EXAMPLE.read_text(encoding="utf-8"))}
    wrong = {}
    for name, field in Settings.model_fields.items():
        expected = env_value(default_of(field))
        if expected is not None and shown.get(name.upper()) != expected:
            wrong[name.upper()] = (shown.get(name.upper()), expected)
    assert not wrong, f".env.example shows other values than the defaults (shown, default): {wrong}"


def write_table() -> None:
    """Replace the committed table in docs/operations.md with the generated one."""
    text = OPERATIONS.read_text(encoding="utf-8")
    old = committed_table(text)
    start = text.find(TABLE_START) + len(TABLE_START)
    end = text.find(TABLE_END)
    OPERATIONS.write_text(text[:start] + "\n" + settings_table() + "\n" + text[end:], encoding="utf-8")
    sys.stdout.write("unchanged\n" if old == settings_table() else f"rewrote the table in {OPERATIONS}\n")


if __name__ == "__main__":
    write_table()
