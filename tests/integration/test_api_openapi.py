"""The OpenAPI document says what the API does: problem details for errors, an event stream, a closed JobCreate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings

PROBLEM_JSON = "application/problem+json"
OUTPUT_PATH = "/jobs/{job_id}/attempts/{attempt}/output"


async def _document(make_settings: Callable[..., Settings]) -> dict[str, Any]:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def test_every_error_response_is_declared_as_problem_details(make_settings: Callable[..., Settings]) -> None:
    document = await _document(make_settings)

    errors = [
        (path, method, code, response)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for code, response in operation["responses"].items()
        if code.isdigit() and int(code) >= 400
    ]
    assert errors
    for path, method, code, response in errors:
        assert list(response["content"]) == [PROBLEM_JSON], (path, method, code)
        assert response["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/ProblemRead"}
    # Every operation that takes input says it may refuse it.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("parameters") or operation.get("requestBody"):
                assert "400" in operation["responses"], (path, method)


async def test_following_output_is_declared_as_an_event_stream(make_settings: Callable[..., Settings]) -> None:
    document = await _document(make_settings)

    content = document["paths"][OUTPUT_PATH]["get"]["responses"]["200"]["content"]
    assert {"text/plain", "text/event-stream"} <= set(content)


async def test_job_create_allows_no_other_property(make_settings: Callable[..., Settings]) -> None:
    document = await _document(make_settings)

    job_create = document["components"]["schemas"]["JobCreate"]
    assert job_create["additionalProperties"] is False
    post = document["paths"]["/jobs"]["post"]["responses"]
    assert {"400", "413", "415", "422", "429"} <= set(post)
