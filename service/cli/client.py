"""A small client of the service's REST API for the command line: one line for any failure, and SSE following."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

REQUEST_TIMEOUT_SECONDS = 30.0
# A followed stream may stay quiet for long (the server sends a keep-alive comment now and then).
FOLLOW_READ_TIMEOUT_SECONDS = 120.0
USER_AGENT = "jobmanager-cli"


class ApiError(Exception):
    """The API answered with an error (its problem details' `detail`), or could not be reached at all."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One Server-Sent Event: `output` (text the program wrote) or `end` (its outcome, as JSON)."""

    event: str
    data: str
    id: str | None = None


def _problem_detail(response: httpx.Response) -> str:
    """The `detail` of a problem-details body, or the status line when the body is something else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]:
        return str(body["detail"])
    return f"{response.status_code} {response.reason_phrase} from {response.request.method} {response.request.url}"


class ApiClient:
    """Talks to one service at `base_url`; sends `Authorization: Bearer <token>` when a token is given."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **options)
        except httpx.ConnectError as error:
            raise ApiError(f"cannot connect to {self.base_url}: {_reason(error)}") from None
        except httpx.TimeoutException:
            raise ApiError(f"{self.base_url} did not answer within {REQUEST_TIMEOUT_SECONDS:g} s") from None
        except httpx.HTTPError as error:
            raise ApiError(f"{method} {self.base_url}{path} failed: {_reason(error)}") from None

    def request(self, method: str, path: str, *, allow: tuple[int, ...] = (), **options: Any) -> httpx.Response:
        """The response; an error status (unless in `allow`) raises ApiError with the problem's detail."""
        response = self._send(method, path, **options)
        if response.is_error and response.status_code not in allow:
            raise ApiError(_problem_detail(response), status_code=response.status_code)
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post_json(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers or {}).json()

    def follow(self, path: str, **params: Any) -> Iterator[StreamEvent]:
        """The events of a text/event-stream, as they come."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=FOLLOW_READ_TIMEOUT_SECONDS)
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(_problem_detail(response), status_code=response.status_code)
                yield from parse_event_stream(response.iter_lines())
        except httpx.ConnectError as error:
            raise ApiError(f"cannot connect to {self.base_url}: {_reason(error)}") from None
        except httpx.HTTPError as error:
            raise ApiError(f"following {self.base_url}{path} failed: {_reason(error)}") from None


def parse_event_stream(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-Sent Events from the stream's lines: `field: value` lines, an empty line ends an event."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield StreamEvent(event=event, data="\n".join(data), id=event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    if data:
        yield StreamEvent(event=event, data="\n".join(data), id=event_id)


def end_of(event: StreamEvent) -> dict[str, Any]:
    """The `end` event's body: outcome, exitCode, signal."""
    body: dict[str, Any] = json.loads(event.data)
    return body


def _reason(error: httpx.HTTPError) -> str:
    text = str(error) or error.__class__.__name__
    # httpx names the errno ("[Errno 111] Connection refused"); the words are what a person needs.
    return text.split("] ", 1)[-1].lower() if "] " in text else text
