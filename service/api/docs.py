"""The API documentation at /schema: Swagger UI served by the service itself, so it works with no other host."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from litestar import Controller, Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath
from swagger_ui_bundle import swagger_ui_path

from service import __version__

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
SWAGGER_UI_DISTRIBUTION = "swagger-ui-bundle"
LICENSE_ASSET = "LICENSE"
# The files the page loads, from the swagger-ui-bundle package, and their media types. Nothing else is served:
# the package's own index.html points at an example API elsewhere.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    LICENSE_ASSET: "text/plain; charset=utf-8",
}
# The files never change while the service runs; a browser may keep them for a day.
ASSET_CACHE_SECONDS = 24 * 3600


def _asset_bytes(name: str) -> bytes:
    if name == LICENSE_ASSET:
        # Swagger UI's licence (Apache-2.0), as its package ships it, beside the files it covers.
        distribution = metadata.distribution(SWAGGER_UI_DISTRIBUTION)
        licence = next(
            (file for file in distribution.files or [] if Path(str(file)).name.upper().startswith("LICEN")), None
        )
        if licence is None:
            raise NotFoundException(detail="the Swagger UI package ships no licence file")
        return Path(str(distribution.locate_file(licence))).read_bytes()
    return (Path(str(swagger_ui_path)) / name).read_bytes()


class DocsAssetController(Controller):
    path = ASSETS_PATH
    include_in_schema = False

    @get("/{name:str}", summary="A file of the documentation page", sync_to_thread=True)
    def asset(self, name: FromPath[str]) -> Response[bytes]:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundException(detail=f"no documentation asset {name!r}")
        return Response(
            _asset_bytes(name),
            media_type=media_type,
            headers={"Cache-Control": f"public, max-age={ASSET_CACHE_SECONDS}"},
        )


def openapi_config() -> OpenAPIConfig:
    """Swagger UI at /schema and /schema/swagger, with its scripts, style and icon from /schema/assets."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )
    return OpenAPIConfig(
        title="Concurrent Job Manager",
        version=__version__,
        path=SCHEMA_PATH,
        render_plugins=[swagger, YamlRenderPlugin()],
    )
