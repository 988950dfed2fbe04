"""The dashboard: server-rendered pages, their static assets and the JSON they draw from, all served by the service."""

from __future__ import annotations

from pathlib import Path

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from service.web.data import DashboardDataController
from service.web.pages import PageController

WEB_DIRECTORY = Path(__file__).resolve().parent
STATIC_PATH = "/ui/static"


def web_route_handlers() -> list[ControllerRouterHandler]:
    """The pages, the JSON they fetch, and the static files: everything the browser loads comes from here."""
    static: Router = create_static_files_router(
        path=STATIC_PATH, directories=[WEB_DIRECTORY / "static"], name="static", include_in_schema=False
    )
    return [PageController, DashboardDataController, static]


def web_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=WEB_DIRECTORY / "templates", engine=JinjaTemplateEngine)
