"""``/docs``: Swagger UI served by opencdp itself, so it works with no Internet access.

Swagger UI's files are the npm package ``swagger-ui-dist``, copied unchanged into
``static/swagger-ui`` (its version, integrity hash and licence are in ``VERSION`` and
``LICENSE`` beside them; ``make vendor-swagger-ui`` refreshes them). The page loads
nothing from another origin, and says so to the browser (``Content-Security-Policy``);
without JavaScript it still links to ``/openapi.json``.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from opencdp.api.routing import Endpoint
from opencdp.errors import NotFound

ASSETS = "/docs/assets"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
_SERVED = (
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "swagger-ui/favicon-32x32.png",
    "docs.js",
)
# Only this origin; Swagger UI sets inline styles and draws icons from data: URLs.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def endpoints() -> list[Endpoint]:
    """``/docs`` and the files its page loads."""
    return [
        Endpoint(
            path="/docs",
            methods=("GET",),
            handler=docs_page,
            operation_id="docs",
            summary="Interactive API documentation (Swagger UI, served from opencdp itself)",
            tag="Operations",
            errors=(405,),
        ),
        Endpoint(
            path=ASSETS + "/{name}",
            methods=("GET",),
            handler=docs_asset,
            operation_id="docs_asset",
            summary="The files of the documentation page (Swagger UI's script and style)",
            tag="Operations",
            errors=(404, 405),
        ),
    ]


async def docs_page(request: Request) -> Response:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": _POLICY})


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    found = _assets().get(name)
    if found is None:
        raise NotFound(f"no documentation file {name!r}")
    body, media_type = found
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=86400"})


def swagger_ui_version() -> str:
    """The vendored Swagger UI's version, from the first line of its ``VERSION`` file."""
    return _static("swagger-ui/VERSION").decode().split()[1]


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    return {
        path.rsplit("/", 1)[-1]: (_static(path), MEDIA_TYPES[path[path.rindex(".") :]])
        for path in _SERVED
    }


def _static(path: str) -> bytes:
    return resources.files("opencdp").joinpath("static", *path.split("/")).read_bytes()


@functools.cache
def _page() -> str:
    asset = f"{ASSETS}/{{}}?v={swagger_ui_version()}"
    return _PAGE.format(
        css=asset.format("swagger-ui.css"),
        icon=asset.format("favicon-32x32.png"),
        bundle=asset.format("swagger-ui-bundle.js"),
        init=asset.format("docs.js"),
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>opencdp API</title>
<link rel="icon" type="image/png" href="{icon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<p id="fallback">The API description itself (OpenAPI 3.1, JSON):
<a href="/openapi.json">/openapi.json</a></p>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""
