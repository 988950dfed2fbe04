"""Bearer tokens through the real app: 401 problems with a challenge, public probes, who submitted a job.

SIGHUP needs the event loop of the main thread: tests/e2e/test_security.py sends it to a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings
from tests.support.api import Client

API_TOKEN = "api-token-0123456789abcdef"
ALICE = "alice-token-0123456789abc"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# the team\nalice:{ALICE}\n", encoding="utf-8")
    return path


@pytest.fixture
async def client(make_settings: Callable[..., Settings], tokens_file: Path) -> AsyncIterator[Client]:
    app = create_app(make_settings(api_token=API_TOKEN, api_tokens_file=tokens_file, shutdown_mode="drain"))
    async with AsyncTestClient(app=app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_without_a_token_every_endpoint_but_the_probes_is_401(client: Client) -> None:
    for method, path in [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/job-1"), ("GET", "/stats"),
                         ("POST", "/jobs/job-1/cancel"), ("GET", "/schema/openapi.json")]:  # fmt: skip
        response = await client.request(method, path, json={"jobName": "x"} if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == 'Bearer realm="jobmanager"'
        body = response.json()
        assert body["status"] == 401
        assert body["instance"] == path
        assert "Authorization" in body["detail"]
    health = await client.get("/health")
    assert health.status_code == 200, health.text


@pytest.mark.parametrize("header", [f"Bearer {ALICE}x", f"Bearer {API_TOKEN[:-1]}", "Bearer ", f"Basic {API_TOKEN}"])
async def test_a_wrong_token_is_401_invalid_token(client: Client, header: str) -> None:
    response = await client.get("/jobs", headers={"Authorization": header})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="jobmanager", error="invalid_token"'
    assert response.json()["detail"] == "the bearer token in the Authorization header is not valid"


async def test_each_job_records_the_name_of_the_token_that_submitted_it(client: Client) -> None:
    submitted = {}
    for token, name in [(API_TOKEN, "default"), (ALICE, "alice")]:
        response = await client.post("/jobs", json={"jobName": f"by-{name}"}, headers=bearer(token))
        assert response.status_code == 201, response.text
        assert response.json()["submittedBy"] == name
        submitted[response.json()["jobId"]] = name
    # The scheme's case does not matter (RFC 9110).
    listing = await client.get("/jobs", headers={"Authorization": f"bearer {ALICE}"})
    assert listing.status_code == 200, listing.text
    assert {job["jobId"]: job["submittedBy"] for job in listing.json()} == submitted


async def test_without_token_settings_nothing_is_asked_and_nobody_is_recorded(
    make_settings: Callable[..., Settings],
) -> None:
    async with AsyncTestClient(app=create_app(make_settings(shutdown_mode="drain"))) as client:
        response = await client.post("/jobs", json={"jobName": "open"})
        assert response.status_code == 201, response.text
        assert response.json()["submittedBy"] is None
