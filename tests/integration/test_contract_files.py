"""The files a user reads or imports agree with the code: Postman collection, psql queries of the README and
docs/psql.md, compose file, .env."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.records import AttemptEnding, NewJob
from service.domain.retry import NO_WAIT
from service.domain.status import AttemptOutcome
from service.settings import Settings
from tests.support.stores import Stores

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
POSTMAN_COLLECTION = REPOSITORY_ROOT / "postman_collection.json"
README = REPOSITORY_ROOT / "README.md"
README_TOUR_HEADING = "## A short tour"
PSQL_GUIDE = REPOSITORY_ROOT / "docs" / "psql.md"
COMPOSE_FILE = REPOSITORY_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPOSITORY_ROOT / ".env.example"
COMPOSE_CONFIG_SECONDS = 60

# Path parameters in either notation: Litestar's `{job_id:str}`, Postman's `{{jobId}}` and `:jobId`.
_PATH_PARAMETER = re.compile(r"^(\{\{[^}]+\}\}|\{[^}]+\}|:[A-Za-z_]\w*)$")
_AUTOMATIC_METHODS = frozenset({"OPTIONS", "HEAD"})  # Litestar answers these for every route by itself


def path_template(segments: list[str]) -> str:
    """`/jobs/{}` for both `/jobs/{job_id:str}` and `/jobs/{{jobId}}`."""
    return "/" + "/".join("{}" if _PATH_PARAMETER.match(segment) else segment for segment in segments if segment)


def is_documentation(path: str) -> bool:
    return path == "/schema" or path.startswith("/schema/")


@pytest.fixture
def app_routes(make_settings: Callable[..., Settings]) -> dict[tuple[str, str], HTTPRouteHandler]:
    """(method, path template) → handler, for every HTTP route of the real app, API documentation included."""
    routes: dict[tuple[str, str], HTTPRouteHandler] = {}
    for route in create_app(make_settings()).routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for method in set(handler.http_methods) - _AUTOMATIC_METHODS:
                routes[(method, path_template(route.path.split("/")))] = handler
    return routes


def postman_requests(items: list[dict[str, Any]], folder: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, request) for every request of a Postman v2.1 collection, folders included."""
    for item in items:
        name = f"{folder}/{item.get('name', '?')}"
        if "item" in item:
            yield from postman_requests(item["item"], name)
        if "request" in item:
            yield name, item["request"]


def postman_route(request: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(method, path template, query parameter names) of one request."""
    method = str(request.get("method", "GET")).upper()
    url = request["url"]
    if isinstance(url, str):
        url = {"raw": url}
    if "path" in url:
        segments = [segment if isinstance(segment, str) else str(segment["value"]) for segment in url["path"]]
        query = [str(parameter["key"]) for parameter in url.get("query", []) if not parameter.get("disabled")]
    else:
        raw = re.sub(r"^(\{\{[^}]+\}\}|https?://[^/]+)", "", url["raw"])
        path, _, query_string = raw.partition("?")
        segments = path.split("/")
        query = [key for key, _ in parse_qsl(query_string, keep_blank_values=True)]
    return method, path_template(segments), query


def wire_names(handler: HTTPRouteHandler) -> set[str]:
    """The names a handler takes its parameters by: its argument names, and the names some are given on the wire
    (`QueryParameter(name="createdAfter")`)."""
    names = set(inspect.signature(handler.fn).parameters)
    for parameter in handler.parsed_fn_signature.parameters.values():
        alias = getattr(parameter.kwarg_definition, "name", None)
        if alias:
            names.add(alias)
    return names


def test_postman_collection_matches_the_routes(app_routes: dict[tuple[str, str], HTTPRouteHandler]) -> None:
    assert POSTMAN_COLLECTION.is_file(), f"{POSTMAN_COLLECTION.name} is missing at the stores root"
    collection = json.loads(POSTMAN_COLLECTION.read_text(encoding="utf-8"))
    assert "v2.1" in collection["info"]["schema"], "expected a Postman v2.1 collection"
    requests = list(postman_requests(collection["item"]))
    assert requests, "the collection has no request"

    covered = set()
    for name, request in requests:
        method, template, query = postman_route(request)
        handler = app_routes.get((method, template))
        assert handler is not None, f"{name}: {method} {template} is not a route of the app"
        accepted = wire_names(handler)
        unknown = set(query) - accepted
        assert not unknown, f"{name}: query parameter(s) {sorted(unknown)} are not taken by {method} {template}"
        covered.add((method, template))

    # The documentation routes (/schema...) may appear in the collection but need not; nor need the routes the
    # OpenAPI document leaves out (the dashboard's pages, assets and JSON), which are no part of the REST contract.
    missing = sorted(
        route
        for route in set(app_routes) - covered
        if not is_documentation(route[1]) and app_routes[route].resolve_include_in_schema()
    )
    assert not missing, f"routes without a request in {POSTMAN_COLLECTION.name}: {missing}"


def psql_queries(document: Path, section_heading: str | None = None) -> list[tuple[str, list[str]]]:
    """Each ```sql block of a document (of one `## ` section of it, if a heading is given), with the columns of the
    psql output block that follows it."""
    section = document.read_text(encoding="utf-8")
    if section_heading is not None:
        heading = re.search(rf"^{re.escape(section_heading)}[ \t]*$", section, flags=re.MULTILINE)
        assert heading is not None, f"{document.name} has no {section_heading!r} section"
        section = section[heading.end() :]
        following = re.search(r"^## ", section, flags=re.MULTILINE)
        if following:
            section = section[: following.start()]
    queries = []
    for match in re.finditer(r"^```sql[ \t]*\n(.*?)^```[ \t]*\n", section, flags=re.MULTILINE | re.DOTALL):
        query = match.group(1).strip()
        # The next block shows what psql printed; its first line is the column header: " a | b | c ".
        output = re.match(r"\s*^```(?:text)?[ \t]*\n(.*?)^```", section[match.end() :], flags=re.MULTILINE | re.DOTALL)
        assert output is not None, f"{document.name} query is not followed by the output it gives:\n{query}"
        header = output.group(1).strip("\n").splitlines()[0]
        queries.append((query, [column.strip() for column in header.split("|")]))
    return queries


async def seed_history(stores: Stores) -> None:
    """Jobs that ended every common way, with real claims and attempts: a success, a crash after a retry, a job
    killed then retried and still running, and one waiting in the queue."""
    now = datetime.now(UTC)

    async def end(
        attempt_id: int, outcome: AttemptOutcome, *, exit_code: int | None, signal: int | None = None, duration_ms: int
    ) -> None:
        ending = AttemptEnding(
            outcome=outcome, finished_at=now, exit_code=exit_code, signal=signal, duration_ms=duration_ms
        )
        assert await stores.attempts.record_outcome(attempt_id=attempt_id, ending=ending, retry_policy=NO_WAIT)

    for name, arguments in (
        ("task-123", ["input1", "output2"]),
        ("nightly-report-for-march", []),
        ("cleanup", ["--all"]),
    ):
        await stores.jobs.submit_job(NewJob(name=name, program="/usr/bin/true", arguments=arguments, max_attempts=2))
    first_round = await stores.attempts.claim_due_jobs(node_id="node-a", limit=10)
    assert len(first_round) == 3
    for number, attempt in enumerate(first_round):
        await stores.attempts.record_process_started(
            attempt_id=attempt.attempt_id, pid=4000 + number, process_started_at=now, started_at=now
        )
    succeeded, failed, killed = first_round
    await end(succeeded.attempt_id, AttemptOutcome.SUCCEEDED, exit_code=0, duration_ms=1500)
    await end(failed.attempt_id, AttemptOutcome.FAILED, exit_code=1, duration_ms=200)
    await end(killed.attempt_id, AttemptOutcome.KILLED, exit_code=None, signal=9, duration_ms=50)

    second_round = await stores.attempts.claim_due_jobs(node_id="node-b", limit=10)
    assert sorted(attempt.job_id for attempt in second_round) == sorted([failed.job_id, killed.job_id])
    retry_of_failed = next(attempt for attempt in second_round if attempt.job_id == failed.job_id)
    await end(retry_of_failed.attempt_id, AttemptOutcome.FAILED, exit_code=2, duration_ms=300)

    await stores.jobs.submit_job(
        NewJob(name="queued-job-9", program="/usr/bin/true", arguments=["a", "b"], max_attempts=2)
    )


async def test_readme_psql_queries_run_on_a_real_history(engine: AsyncEngine, stores: Stores) -> None:
    assert PSQL_GUIDE.is_file(), "docs/psql.md is missing"
    assert README.is_file(), "README.md is missing"
    guide_queries = psql_queries(PSQL_GUIDE)
    assert len(guide_queries) >= 6, f"expected at least 6 ```sql blocks in docs/psql.md, found {len(guide_queries)}"
    tour_queries = psql_queries(README, README_TOUR_HEADING)
    assert tour_queries, f"expected the README's {README_TOUR_HEADING!r} to show a psql query with its output"
    queries = guide_queries + tour_queries
    await seed_history(stores)

    async with engine.connect() as connection:
        for query, columns in queries:
            # Exactly what a psql user would paste, sent as it is (no SQLAlchemy parameter parsing).
            result = await connection.exec_driver_sql(query)
            assert result.returns_rows, f"documented query returns no rows at all:\n{query}"
            assert list(result.keys()) == columns, (
                f"documented query gives other columns than its output shows:\n{query}"
            )
            result.fetchall()
        await connection.rollback()


def test_docker_compose_config_accepts_the_compose_file() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("the docker-compose command is not installed (Debian package docker-compose); no engine needed")
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing at the stores root"
    completed = subprocess.run(
        [compose, "-f", str(COMPOSE_FILE), "config"],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=COMPOSE_CONFIG_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, f"docker-compose config failed:\n{completed.stderr}\n{completed.stdout}"


def test_env_example_documents_every_setting() -> None:
    assert ENV_EXAMPLE.is_file(), ".env.example is missing at the stores root"
    # Active (`NAME=value`) or commented out (`# NAME=value`) both document the variable.
    documented = set(
        re.findall(r"^[ \t]*#?[ \t]*([A-Z][A-Z0-9_]*)[ \t]*=", ENV_EXAMPLE.read_text("utf-8"), re.MULTILINE)
    )
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert not missing, f".env.example does not mention {missing}"
