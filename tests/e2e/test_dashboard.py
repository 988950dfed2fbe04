"""End to end in a real browser: the dashboard served by a real server, driven by Playwright on the machine's
chromium. Submits through the form, watches jobs appear and finish without a reload, follows output live, cancels
a running job, pages and filters, and checks that the page never asks another host for anything."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, Request, expect, sync_playwright

from tests.support.server import ServerStarter, free_port, service_environment

pytestmark = pytest.mark.e2e

CHROMIUM_ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Generous: the machine is shared, and a job's end reaches the page through a poll.
EXPECT_MILLISECONDS = 30_000
# `hold` keeps the job running until it is cancelled, `fail` exits 3; anything else prints and ends.
JOB_SCRIPT = """\
#!/bin/sh
echo "started $*"
if [ "$1" = "fail" ]; then
    echo "failing on purpose" >&2
    exit 3
fi
if [ "$1" = "hold" ]; then
    echo "holding"
    while :; do sleep 0.1; done
fi
echo "finished"
"""
# Set to a folder to keep the screenshots there too (docs/dashboard.md: how docs/images is refreshed).
SCREENSHOT_DIR_VARIABLE = "DASHBOARD_SCREENSHOT_DIR"
TOKEN = "dashboard-test-token"


@pytest.fixture
def playwright(database_url: str) -> Iterator[Playwright]:
    """After the database (and torn down before it): Playwright's sync API keeps an event loop running, inside
    which the database fixtures could not run theirs."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGUMENTS)
    yield launched
    launched.close()


def _start(start_server: ServerStarter, tmp_path: Path, database_url: str, **extra: str) -> str:
    script = tmp_path / "job.sh"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    script.chmod(0o755)
    server = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "app.log"),
            JOB_SCRIPT_PATH=str(script),
            SHUTDOWN_MODE="kill",
            POLL_INTERVAL_SECONDS="0.2",
            CANCEL_GRACE_SECONDS="2",
            MAX_ATTEMPTS="1",
            **extra,
        )
    )
    server.wait_until_healthy()
    return server.base_url


@pytest.fixture
def base_url(start_server: ServerStarter, tmp_path: Path, database_url: str) -> str:
    return _start(start_server, tmp_path, database_url)


class RequestLog:
    """Every request the page made: the test checks that none left the service's own host."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        page.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    def foreign(self, base_url: str) -> list[str]:
        own = urlsplit(base_url).netloc
        addresses = [urlsplit(url) for url in self.urls]
        return [url.geturl() for url in addresses if url.scheme not in ("data", "blob") and url.netloc != own]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(EXPECT_MILLISECONDS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"the page's scripts failed: {errors}"


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
    folder = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    if folder:
        page.screenshot(path=Path(folder) / f"{name}.png", full_page=True)


def _submit(page: Page, name: str, arguments: str = "") -> None:
    form = page.locator("#submit-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Arguments").fill(arguments)
    form.get_by_role("button", name="Submit job").click()


def test_a_job_submitted_in_the_form_appears_finishes_and_shows_its_output_without_a_reload(
    page: Page, base_url: str, tmp_path: Path
) -> None:
    requests = RequestLog(page)
    page.goto(base_url + "/")
    expect(page.locator("#counts .count")).to_have_count(7)
    expect(page.locator("#nodes")).to_contain_text("0 running · 10 free of 10")
    page.evaluate("window.notReloaded = true")

    page.locator("#new-job summary").click()
    _submit(page, "dash-hello", "alpha\nbeta two")
    expect(page.locator("#submit-result")).to_contain_text("Submitted job-")
    row = page.locator("#jobs-body tr", has=page.locator("td.name", has_text="dash-hello"))
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator("td").nth(5)).to_have_text("0")  # the exit code
    expect(page.locator("#counts .status-completed .count-value")).to_have_text("1")
    expect(page.locator("#activity-chart svg rect.outcome-succeeded")).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True, "the page reloaded to show the job"
    _screenshot(page, tmp_path, "dashboard-submitted")

    row.get_by_role("link").click()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#job-fields")).to_contain_text("beta two")
    expect(page.locator("#attempts-body tr")).to_have_count(1)
    expect(page.locator("#attempts-body tr").first).to_contain_text("succeeded")
    expect(page.locator("#output")).to_have_text("started alpha beta two\nfinished\n")
    expect(page.locator("#output-state")).to_contain_text("ended: succeeded, exit code 0")
    expect(page.locator("#cancel-button")).to_be_disabled()
    expect(page.locator("#retry-button")).to_be_disabled()
    _screenshot(page, tmp_path, "dashboard-job")

    page.goto(base_url + "/ui/stats")
    expect(page.locator("#stats-summary")).to_contain_text("finished attempts")
    expect(page.locator("#patterns-chart svg g.row").first).to_be_visible()
    expect(page.locator("#whatif-body tr").first).to_be_visible()

    assert requests.foreign(base_url) == []


def test_a_running_job_is_followed_live_and_cancelled_after_a_confirmation(
    page: Page, base_url: str, tmp_path: Path
) -> None:
    requests = RequestLog(page)
    page.goto(base_url + "/ui/submit")
    _submit(page, "dash-hold", "hold")
    link = page.locator("#submit-result a")
    expect(link).to_have_text("job-1")
    link.click()

    # Output arrives while the attempt runs: the job is still `running`, and the stream is still open.
    expect(page.locator("#output")).to_have_text("started hold\nholding\n")
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator("#output-state")).to_have_text("Following…")
    _screenshot(page, tmp_path, "dashboard-running")

    page.locator("#cancel-button").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep it").click()  # the first time, the user changes their mind
    expect(dialog).to_be_hidden()
    expect(page.locator("#job-status")).to_have_text("running")

    page.locator("#cancel-button").click()
    dialog.get_by_role("button", name="Cancel the job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#attempts-body tr").first).to_contain_text("cancelled")
    expect(page.locator("#output-state")).to_contain_text("ended: cancelled")
    expect(page.locator("#retry-button")).to_be_enabled()
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/jobs/job-1").json()["status"] == "cancelled"
    assert requests.foreign(base_url) == []


def test_the_form_shows_the_apis_errors_beside_their_fields_and_the_table_filters_and_pages(
    page: Page, base_url: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=base_url) as client:
        for number in range(25):
            arguments = ["fail"] if number % 4 == 0 else [str(number)]
            client.post("/jobs", json={"jobName": f"batch-{number:02d}", "arguments": arguments}).raise_for_status()
        for _ in range(10):
            client.post("/jobs", json={"jobName": "nightly"}).raise_for_status()
        client.post("/jobs", json={"jobName": "other"}).raise_for_status()
    page.goto(base_url + "/")
    expect(page.locator("#counts .status-crashed .count-value")).to_have_text("7")
    expect(page.locator("#counts .status-completed .count-value")).to_have_text("29")
    _screenshot(page, tmp_path, "dashboard")

    page.locator("#new-job summary").click()
    form = page.locator("#submit-form")
    form.get_by_label("Name").fill("too-urgent")
    form.get_by_label("Priority").fill("5000")
    form.get_by_role("button", name="Submit job").click()
    expect(page.locator("#error-priority")).to_contain_text("1000")
    expect(form.get_by_label("Priority")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#submit-detail")).to_contain_text("priority")

    page.get_by_label("Name starts with").fill("batch-")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-body tr")).to_have_count(20)
    expect(page.locator("#jobs-body tr").first.locator("td.name")).to_have_text("batch-24")
    assert "name=batch-" in page.url
    page.get_by_role("button", name="Older →").click()
    expect(page.locator("#jobs-body tr")).to_have_count(5)
    expect(page.locator("#jobs-body tr").last.locator("td.name")).to_have_text("batch-00")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(page.locator("#jobs-body tr").first.locator("td.name")).to_have_text("batch-24")

    page.get_by_label("Name starts with").fill("")
    page.get_by_label("Status", exact=True).select_option("completed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-body tr").first.locator(".badge")).to_have_text("completed")
    expect(page.locator("#jobs-body tr td.name", has_text="too-urgent")).to_have_count(0)

    page.goto(base_url + "/ui/stats")
    expect(page.locator("#stats-summary")).to_contain_text("36")  # finished attempts, one per job
    expect(page.locator("#breakdowns svg")).not_to_have_count(0)
    _screenshot(page, tmp_path, "dashboard-stats")


def test_the_dashboard_asks_once_for_a_token_and_sends_it_on_every_request(
    page: Page, start_server: ServerStarter, tmp_path: Path, database_url: str
) -> None:
    base_url = _start(start_server, tmp_path, database_url, API_TOKEN=TOKEN)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        job_id = client.post("/jobs", json={"jobName": "behind-a-token"}).json()["jobId"]
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda request: sent.append((request.url, request.headers.get("authorization"))))

    page.goto(base_url + "/")  # the page itself renders without a token
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API token").fill("wrong")
    dialog.get_by_role("button", name="Use this token").click()
    expect(dialog.locator("#token-error")).to_have_text("That token was refused; try another.")
    dialog.get_by_label("API token").fill(TOKEN)
    dialog.get_by_role("button", name="Use this token").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#jobs-body td.name")).to_have_text("behind-a-token")
    assert page.evaluate("sessionStorage.getItem('jobmanager.apiToken')") == TOKEN

    # Another page of the same tab: the token is kept, the followed output (fetch, not EventSource) sends it too.
    sent.clear()
    page.goto(f"{base_url}/ui/jobs/{job_id}")
    expect(page.locator("#output")).to_contain_text("finished")
    expect(dialog).to_be_hidden()
    data_requests = [(url, header) for url, header in sent if urlsplit(url).path.startswith(("/jobs", "/ui/api/"))]
    assert any("follow=true" in url for url, _ in data_requests)
    assert all(header == f"Bearer {TOKEN}" for _, header in data_requests), data_requests
