"""The page at / (app/api/ui.py, app/ui/): served with a strict CSP, self-contained, optional."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from app.api.ui import ASSETS, CONTENT_SECURITY_POLICY, UI_DIR
from app.main import create_app
from tests.api.conftest import Served, make_settings
from tests.fakes import fake_loader, fake_pair

STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def assert_locked_down(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_policy_is_the_documented_one() -> None:
    assert CONTENT_SECURITY_POLICY == STRICT_CSP


async def test_root_serves_the_page_with_its_headers(served: Served) -> None:
    response = await served.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_locked_down(response)
    assert response.content == (UI_DIR / "index.html").read_bytes()
    assert "x-request-id" in response.headers  # through the same middleware as the API


@pytest.mark.parametrize(
    ("asset", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
async def test_assets_have_their_media_types(served: Served, asset: str, media_type: str) -> None:
    response = await served.client.get(f"/ui/{asset}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert_locked_down(response)
    assert response.content == (UI_DIR / asset).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/nope.js",
        "/ui/..%2Fapi%2Fui.py",
        "/ui/%2e%2e%2fconfig.py",
        "/ui/..%5Cconfig.py",
        "/ui/app.js%00.css",
        "/ui/APP.JS",
        "/ui/../config.py",
        "/ui/ui/app.js",
        "/ui//etc/passwd",
        "/index.html",
        "/app.js",
    ],
)
async def test_nothing_else_is_served(served: Served, path: str) -> None:
    response = await served.client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_page_is_open_while_the_api_needs_the_key() -> None:
    semantic, instance = fake_pair()
    app = create_app(make_settings(api_key="k"), loader=fake_loader(semantic, instance))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/ui/app.js")).status_code == 200
        assert (await client.get("/models")).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"ui": False}])
async def test_ui_false_turns_the_page_off(served: Served) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css", "/ui/index.html"):
        assert (await served.client.get(path)).status_code == 404, path
    assert (await served.client.get("/healthz")).status_code == 200


async def test_the_page_stays_out_of_the_openapi_schema(served: Served) -> None:
    paths = (await served.client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/ui")]


def _static_files() -> list[Path]:
    files = sorted(UI_DIR.iterdir())
    assert [p.name for p in files] == sorted(ASSETS), "app/ui/ holds exactly the served files"
    return files


@pytest.mark.parametrize("path", _static_files(), ids=lambda p: p.name)
def test_the_page_references_no_outside_url(path: Path) -> None:
    text = path.read_text()
    # No scheme-qualified URL and no protocol-relative one: app.js uses only /* */ comments,
    # so "//" appears nowhere at all.
    for needle in ("http:", "https:", "//", "ws:", "wss:", "@import"):
        assert needle not in text.lower(), f"{path.name} contains {needle!r}"
    # Every URL the page names is a path of this service (or the empty icon, "data:,", which
    # spares the browser a request for /favicon.ico).
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", text):
        assert url.startswith("/ui/") or url == "data:,", url
    for url in re.findall(r"""\b(?:fetch|api)\(\s*[`"']([^`"']+)""", text):
        assert url.startswith("/"), url


class _Inline(HTMLParser):
    """Collects what the CSP would block: inline scripts and styles, handlers, js: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self.scripts.append(names)
            self._in_script = True
            if not names.get("src"):
                self.problems.append("<script> without src")
        for name, value in attrs:
            if name == "style":
                self.problems.append(f"style attribute on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name} handler on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("code inside <script>")


def test_index_html_has_no_inline_script_or_style() -> None:
    parser = _Inline()
    parser.feed((UI_DIR / "index.html").read_text())
    assert parser.problems == []
    assert [s.get("src") for s in parser.scripts] == ["/ui/app.js"]


def test_the_script_never_puts_the_key_in_a_url() -> None:
    script = (UI_DIR / "app.js").read_text()
    assert 'headers.set("X-API-Key", apiKey)' in script
    # The key's only uses: the header, its input, and sessionStorage when asked to keep it.
    uses = re.findall(r"[^\n]*\bapiKey\b[^\n]*", script)
    assert not [u for u in uses if re.search(r"URLSearchParams|params\.|location|href|src|`/", u)]


def test_the_files_ship_in_the_package() -> None:
    # The image installs segserve as a wheel (Dockerfile: pip install .): the page's files
    # must be package data, or / would fail there while working in a checkout.
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from fnmatch import fnmatch

    pyproject = tomllib.loads((UI_DIR.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app"]
    for name in ASSETS:
        assert any(fnmatch(f"ui/{name}", p) for p in patterns), name
