"""Bearer-token authentication: which tokens are valid, who each belongs to, and the middleware that asks for one."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Receive, Scope, Send

from service.api.errors import PROBLEM_JSON

logger = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
DEFAULT_CALLER = "default"
CALLER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
REALM = "jobmanager"
SCOPE_KEY = "auth"
"""Litestar's own key for what authentication found: `request.auth` reads it."""

# Reachable without a token: the probes a load balancer or an orchestrator calls, and the dashboard's static assets
# and HTML shells (they hold no data; their scripts fetch it with the token). Only for GET and HEAD.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/", "/ui/submit", "/ui/stats"})
PUBLIC_PATH_PREFIXES = ("/ui/static/", "/ui/jobs/")
_READ_METHODS = frozenset({"GET", "HEAD"})


class TokenFileError(ValueError):
    """API_TOKENS_FILE cannot be read, or a line of it is not `name:token`."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: the name of the token it carried."""

    token_name: str


def _digest(token: str) -> bytes:
    # Comparing digests, not tokens: equal lengths, so the comparison's time says nothing about a token's length.
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_token_file(path: Path) -> dict[str, str]:
    """`name:token` per line; blank lines and lines starting with `#` are skipped. Raises TokenFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"API_TOKENS_FILE {path} cannot be read: {error}") from error
    tokens: dict[str, str] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, token = line.partition(":")
        name, token = name.strip(), token.strip()
        where = f"API_TOKENS_FILE {path}, line {number}"
        if not separator or re.fullmatch(CALLER_NAME_PATTERN, name) is None:
            raise TokenFileError(
                f"{where}: expected `name:token`, the name of letters, digits, '.', '_', '-' (at most 63)"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(
                f"{where}: the token of {name!r} is {len(token)} characters; at least {MIN_TOKEN_LENGTH}"
            )
        if name in tokens:
            raise TokenFileError(f"{where}: the name {name!r} is given twice")
        tokens[name] = token
    return tokens


class TokenRegistry:
    """The valid tokens by name: API_TOKEN (named `default`) and those of API_TOKENS_FILE, reloadable."""

    def __init__(self, api_token: str | None, tokens_file: Path | None) -> None:
        self._api_token = api_token
        self._tokens_file = tokens_file
        self._digests: tuple[tuple[str, bytes], ...] = ()
        self._install(self._read())

    @property
    def enabled(self) -> bool:
        """Whether requests need a token at all (a token file with no token in it still locks every door)."""
        return self._api_token is not None or self._tokens_file is not None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def _read(self) -> dict[str, str]:
        tokens = parse_token_file(self._tokens_file) if self._tokens_file is not None else {}
        if self._api_token is not None:
            if DEFAULT_CALLER in tokens:
                raise TokenFileError(f"API_TOKENS_FILE names a token {DEFAULT_CALLER!r}, which is API_TOKEN's name")
            tokens = {DEFAULT_CALLER: self._api_token, **tokens}
        return tokens

    def _install(self, tokens: Mapping[str, str]) -> None:
        self._digests = tuple((name, _digest(token)) for name, token in tokens.items())

    def reload(self) -> bool:
        """Read API_TOKENS_FILE again (on SIGHUP). A file that does not read keeps the tokens already loaded."""
        try:
            tokens = self._read()
        except TokenFileError as error:
            logger.warning("tokens not reloaded, the previous ones stay valid: %s", error)
            return False
        self._install(tokens)
        logger.info("tokens reloaded: %d valid (%s)", len(tokens), ", ".join(tokens) or "none")
        return True

    def identify(self, presented: str) -> Caller | None:
        """The caller whose token this is, or None. Every token is compared, in constant time, whatever matches."""
        presented_digest = _digest(presented)
        found: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented_digest, digest) and found is None:
                found = name
        return Caller(found) if found is not None else None


def is_public(method: str, path: str) -> bool:
    return method in _READ_METHODS and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PATH_PREFIXES))


def caller_name(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token name of the request, for the job it submits; None when authentication is off."""
    caller = connection.scope.get(SCOPE_KEY)
    return caller.token_name if isinstance(caller, Caller) else None


def _bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case); None without one."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


async def _send_unauthorized(scope: Scope, send: Send, *, token_given: bool) -> None:
    challenge = f'Bearer realm="{REALM}"'
    if token_given:
        challenge += ', error="invalid_token"'
        detail = "the bearer token in the Authorization header is not valid"
    else:
        detail = "this endpoint needs an Authorization header: `Authorization: Bearer <token>`"
    body = json.dumps(
        {
            "type": "about:blank",
            "title": HTTPStatus.UNAUTHORIZED.phrase,
            "status": HTTPStatus.UNAUTHORIZED.value,
            "detail": detail,
            "instance": scope["path"],
        }
    ).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": HTTPStatus.UNAUTHORIZED.value,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BearerTokenMiddleware(ASGIMiddleware):
    """Every HTTP request but the public ones must carry a valid token; others get a 401 problem."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, registry: TokenRegistry) -> None:
        self._registry = registry

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not self._registry.enabled or is_public(cast("HTTPScope", scope)["method"], scope["path"]):
            await next_app(scope, receive, send)
            return
        token = _bearer_token(scope)
        caller = self._registry.identify(token) if token else None
        if caller is None:
            await _send_unauthorized(scope, send, token_given=token is not None)
            return
        scope[SCOPE_KEY] = caller  # type: ignore[literal-required]
        await next_app(scope, receive, send)
