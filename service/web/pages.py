"""The dashboard's HTML pages. They carry no job data: their scripts fetch it (with the bearer token, if any)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromPath
from litestar.response import Template

# Every page's script reloads its data this often while the tab is visible (pauses while it is hidden).
REFRESH_MILLISECONDS = 2000


def _page(template_name: str, title: str, **context: object) -> Template:
    return Template(
        template_name=template_name,
        context={"title": title, "refresh_ms": REFRESH_MILLISECONDS, **context},
    )


class PageController(Controller):
    include_in_schema = False

    @get("/", name="web.overview")
    async def overview(self) -> Template:
        return _page("overview.html", "Overview", page="overview")

    @get("/ui/jobs/{job_id:str}", name="web.job")
    async def job(self, job_id: FromPath[str]) -> Template:
        return _page("job.html", job_id, page="job", job_id=job_id)

    @get("/ui/submit", name="web.submit")
    async def submit(self) -> Template:
        return _page("submit.html", "Submit a job", page="submit")

    @get("/ui/stats", name="web.stats")
    async def stats(self) -> Template:
        return _page("stats.html", "Insight", page="stats")
