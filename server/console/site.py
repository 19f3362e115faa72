"""The console's web application: its built assets (index.html, app.js, app.css, read once at
start) and the gRPC-Web bridge, every response under a strict security policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from cloudassist.server.console.bridge import Bridge

STATIC_DIR = Path(__file__).parent / "static"
# path -> (file in STATIC_DIR, content type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}

# Scripts and styles only from this origin and never inline (so text that got into the page
# cannot run), calls only to this origin, no framing, no referrer, no sniffing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class AssetsMissing(Exception):
    """The console's assets are not in the package (a checkout without `make console`)."""


def load_assets(directory: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    assets: dict[str, tuple[bytes, str]] = {}
    for path, (name, content_type) in ASSETS.items():
        try:
            assets[path] = ((directory / name).read_bytes(), content_type)
        except OSError as error:
            raise AssetsMissing(f"the console's {name} is missing ({error.strerror})") from error
    return assets


async def _secure(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.method == "GET":
        # The key lives in the tab's sessionStorage, never in a page: still, nothing is
        # kept in shared caches, and a new build is picked up at once.
        response.headers.setdefault("Cache-Control", "no-cache")


def _asset(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


def make_app(bridge: Bridge, assets: dict[str, tuple[bytes, str]]) -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_secure)

    for path, (body, content_type) in assets.items():
        app.router.add_get(path, _asset(body, content_type))
    app.router.add_post("/{service}/{method}", bridge.handle)
    return app
