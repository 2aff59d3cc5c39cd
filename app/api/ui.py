"""The page at ``/``: a browser view of the service's results (static files in app/ui/).

Three fixed files, no build step, nothing from outside the service: ``GET /`` answers
index.html, and ``GET /ui/{asset}`` any of the three (index.html, app.js, style.css). Any
other name is 404: a fixed table, so no request's path ever reaches the file system. Every
answer carries a strict Content-Security-Policy: the page may run only its own script and
style, and talk only to its own origin. The routes stay out of the OpenAPI schema: the API
contract is unchanged. The page is open; its API calls carry the key the user types in
(``X-API-Key``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# The page's own script and style only; images from blob:/data: URLs (the chosen file and the
# downloads); fetch to this origin only; no <base>, no forms posting anywhere, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the service: revalidate rather than serve a stale page.
    "Cache-Control": "no-cache",
}
# The only files served, with their media types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no such page asset: {name!r}")
    return Response((UI_DIR / name).read_bytes(), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> Response:
    return _asset("index.html")


@router.get("/ui/{asset}")
async def asset(asset: str) -> Response:
    return _asset(asset)
