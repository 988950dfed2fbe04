"""What an operator reads of the real app: GET /metrics after real jobs, the offline API documentation, and the
request id on responses."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.metrics import ServiceMetrics
from service.app import create_app
from service.domain.records import NewJob
from service.settings import Settings
from tests.support.api import Client, wait_for_job
from tests.support.keeper import with_prebuilt_keeper
from tests.support.stores import Stores

# Exits with the code given as its first argument.
JOB_SCRIPT = "import sys\nsys.exit(int(sys.argv[1]))\n"
FINAL = {"completed", "crashed", "cancelled"}
FAR_FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def app(make_settings: Callable[..., Settings], tmp_path: Path, keeper_build_dir: Path) -> Litestar:
    script = tmp_path / "exit_with.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    settings = make_settings(job_script_path=script, max_attempts=1, max_concurrent_jobs=4)
    return create_app(with_prebuilt_keeper(settings, keeper_build_dir))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as client:
        yield client


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by (sample name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def finished(outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("jobmanager_attempts_finished_total", (("outcome", outcome), ("program", "default")))


async def test_the_counters_move_by_what_the_jobs_did(client: Client) -> None:
    before = await scrape(client)
    codes = [0, 0, 3]
    job_ids = []
    for code in codes:
        response = await client.post("/jobs", json={"jobName": f"exit-{code}", "arguments": [str(code)]})
        assert response.status_code == 201, response.text
        job_ids.append(response.json()["jobId"])
    # A repeated Idempotency-Key answers 200 with the same job: not a submission.
    keyed = {"jobName": "later", "runAt": FAR_FUTURE}
    assert (await client.post("/jobs", json=keyed, headers={"Idempotency-Key": "k-1"})).status_code == 201
    assert (await client.post("/jobs", json=keyed, headers={"Idempotency-Key": "k-1"})).status_code == 200
    for job_id in job_ids:
        await wait_for_job(client, job_id, lambda job: job["status"] in FINAL)

    after = await scrape(client)

    def moved(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved(("jobmanager_jobs_submitted_total", ())) == 4
    assert moved(finished("succeeded")) == 2
    assert moved(finished("failed")) == 1
    assert moved(("jobmanager_attempt_duration_seconds_count", ())) == 3
    assert moved(("jobmanager_attempt_start_latency_seconds_count", ())) == 3
    assert after[("jobmanager_claim_duration_seconds_count", ())] >= 1
    assert moved(("jobmanager_attempts_claimed_total", ())) == 3
    assert after[("jobmanager_attempts_running", ())] == 0
    assert after[("jobmanager_free_slots", ())] == 4
    assert after[("jobmanager_database_errors_total", ())] == 0


@dataclass
class _Slots:
    running_count: int
    free_slots: int


async def test_the_queued_gauge_counts_due_jobs_up_to_its_bound_and_is_cached(stores: Stores) -> None:
    due = NewJob(name="due", program="/usr/bin/true", arguments=[], max_attempts=1)
    for _ in range(3):
        await stores.jobs.submit_job(due)
    await stores.jobs.submit_job(replace(due, name="later", run_at=datetime(2099, 1, 1, tzinfo=UTC)))
    cached = ServiceMetrics()
    uncached = ServiceMetrics(queued_cache_seconds=0)

    await cached.refresh(_Slots(running_count=1, free_slots=2), stores.jobs)
    await stores.jobs.submit_job(due)
    await cached.refresh(_Slots(running_count=2, free_slots=1), stores.jobs)
    await uncached.refresh(_Slots(running_count=2, free_slots=1), stores.jobs)

    # The queue was counted once, then served from the cache; this node's gauges are read at every scrape.
    assert cached.registry.get_sample_value("jobmanager_jobs_queued") == 3
    assert cached.registry.get_sample_value("jobmanager_attempts_running") == 2
    assert cached.registry.get_sample_value("jobmanager_free_slots") == 1
    assert uncached.registry.get_sample_value("jobmanager_jobs_queued") == 4
    assert await stores.jobs.count_due_jobs(at_most=2) == 2


async def test_two_apps_in_one_process_count_apart(
    make_settings: Callable[..., Settings], keeper_build_dir: Path, client: Client
) -> None:
    other = create_app(with_prebuilt_keeper(make_settings(), keeper_build_dir))
    response = await client.post("/jobs", json={"jobName": "one", "runAt": FAR_FUTURE})
    assert response.status_code == 201

    mine = await scrape(client)

    assert mine[("jobmanager_jobs_submitted_total", ())] == 1
    del other  # its registry is its own: building it registered nothing twice


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del tag
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_documentation_page_needs_no_other_host(client: Client, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    parser = _References()
    parser.feed(response.text)

    assert parser.urls, "the page loads no script or style at all"
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{page} loads {url} from another host"
        assert not parts.netloc, f"{page} loads {url} from another host"
        asset = await client.get(url)
        assert asset.status_code == 200, f"{url}: {asset.status_code}"
        assert asset.content
    assert {urlsplit(url).path.rsplit("/", 1)[-1] for url in parser.urls} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-ui-standalone-preset.js",
    }


async def test_the_licence_of_the_documentation_files_is_served_beside_them(client: Client) -> None:
    response = await client.get("/schema/assets/LICENSE")
    assert response.status_code == 200
    assert "Apache License" in response.text
    assert (await client.get("/schema/assets/index.html")).status_code == 404


async def test_the_openapi_document_is_still_served(client: Client) -> None:
    assert (await client.get("/schema/openapi.json")).json()["info"]["title"] == "Concurrent Job Manager"
    assert (await client.get("/schema/openapi.yaml")).status_code == 200


async def test_a_request_id_is_made_or_kept_and_sent_back(client: Client) -> None:
    made = await client.get("/jobs")
    kept = await client.get("/jobs", headers={"X-Request-ID": "trace-42"})
    failed = await client.get("/jobs/job-999999", headers={"X-Request-ID": "trace-43"})
    unsafe = await client.get("/jobs", headers={"X-Request-ID": "bad id with spaces"})

    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert kept.headers["x-request-id"] == "trace-42"
    assert failed.status_code == 404
    assert failed.headers["x-request-id"] == "trace-43"
    assert unsafe.headers["x-request-id"] != "bad id with spaces"
