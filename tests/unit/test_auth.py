"""Tokens: the file format, the registry (constant-time lookup, reload that never locks everyone out), public paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.api.auth import DEFAULT_CALLER, TokenFileError, TokenRegistry, is_public, parse_token_file

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
SINGLE = "single-token-0123456789"


def write_tokens(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_token_file_gives_names_to_tokens_and_skips_comments(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", f"# the team\n\nalice:{ALICE}\n  bob : {BOB}  \n")
    assert parse_token_file(tokens) == {"alice": ALICE, "bob": BOB}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ALICE}\n", "line 1: expected `name:token`"),
        (f"al ice:{ALICE}\n", "line 1: expected `name:token`"),
        ("alice:short\n", "line 1: the token of 'alice' is 5 characters; at least 16"),
        (f"alice:{ALICE}\nalice:{BOB}\n", "line 2: the name 'alice' is given twice"),
    ],
)
def test_a_bad_line_is_named_with_its_number(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TokenFileError, match=re.escape(message)):
        parse_token_file(write_tokens(tmp_path / "tokens", text))


def test_a_missing_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"API_TOKENS_FILE .* cannot be read"):
        parse_token_file(tmp_path / "absent")


def test_the_registry_knows_api_token_as_default_and_every_file_token_by_name(tmp_path: Path) -> None:
    registry = TokenRegistry(SINGLE, write_tokens(tmp_path / "tokens", f"alice:{ALICE}\n"))
    assert registry.enabled
    assert registry.identify(SINGLE) is not None
    assert registry.identify(SINGLE).token_name == DEFAULT_CALLER  # type: ignore[union-attr]
    assert registry.identify(ALICE).token_name == "alice"  # type: ignore[union-attr]
    assert registry.identify(BOB) is None
    assert registry.identify(ALICE[:-1]) is None
    assert registry.identify("") is None


def test_without_any_token_setting_authentication_is_off() -> None:
    registry = TokenRegistry(None, None)
    assert not registry.enabled
    assert registry.identify(SINGLE) is None


def test_an_empty_token_file_still_requires_a_token(tmp_path: Path) -> None:
    registry = TokenRegistry(None, write_tokens(tmp_path / "tokens", "# nobody yet\n"))
    assert registry.enabled
    assert registry.names == []


def test_a_file_token_may_not_take_api_tokens_name(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="API_TOKEN's name"):
        TokenRegistry(SINGLE, write_tokens(tmp_path / "tokens", f"default:{ALICE}\n"))


def test_reload_replaces_the_tokens_and_a_broken_file_keeps_the_old_ones(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", f"alice:{ALICE}\n")
    registry = TokenRegistry(None, tokens)
    write_tokens(tokens, f"bob:{BOB}\n")
    assert registry.reload()
    assert registry.identify(ALICE) is None
    assert registry.identify(BOB).token_name == "bob"  # type: ignore[union-attr]
    write_tokens(tokens, "bob:short\n")
    assert not registry.reload()
    assert registry.identify(BOB).token_name == "bob"  # type: ignore[union-attr]
    tokens.unlink()
    assert not registry.reload()
    assert registry.names == ["bob"]


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/health", True),
        ("HEAD", "/ready", True),
        ("GET", "/", True),
        ("GET", "/ui/static/common.js", True),
        ("GET", "/ui/jobs/job-1", True),
        ("POST", "/health", False),
        ("GET", "/jobs", False),
        ("POST", "/jobs", False),
        ("GET", "/stats", False),
        ("GET", "/schema", False),
        ("GET", "/ui/api/overview", False),
        ("GET", "/healthz", False),
    ],
)
def test_only_the_probes_and_the_dashboard_shells_are_public(method: str, path: str, public: bool) -> None:
    assert is_public(method, path) is public
