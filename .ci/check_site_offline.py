"""Fail when a built documentation site loads a script, style, font or image from another host.

    python .ci/check_site_offline.py SITE_DIR

Reads every .html and .css file under SITE_DIR; links a reader follows (``<a href>``) may point
anywhere, but nothing the browser loads by itself may, and every local script the pages load
must exist in the site.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""", re.IGNORECASE)
# What the browser fetches on its own: (tag, attribute), and <link rel=...> kinds that load.
LOADED = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"), ("video", "src")}
LINK_LOADS = {"stylesheet", "preload", "preconnect", "dns-prefetch", "modulepreload", "icon"}


class _Loads(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for t, attr in LOADED:
            if tag == t and a.get(attr):
                self.urls.append(a[attr])
        if tag == "link" and LINK_LOADS & set(a.get("rel", "").lower().split()):
            self.urls.append(a.get("href", ""))


def problems(site: Path) -> list[str]:
    out = []
    for page in sorted(site.rglob("*.html")):
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            if REMOTE.match(url):
                out.append(f"{page.relative_to(site)}: loads {url}")
            elif url.endswith(".js") and not url.startswith("data:"):
                path = urlsplit(url).path
                local = (
                    site / path.lstrip("/") if path.startswith("/") else page.parent / path
                ).resolve()
                if not local.is_file():
                    out.append(f"{page.relative_to(site)}: loads {url}, which the site lacks")
    for sheet in sorted(site.rglob("*.css")):
        for match in CSS_URL.finditer(sheet.read_text(encoding="utf-8", errors="replace")):
            url = match.group(1) or match.group(2)
            if REMOTE.match(url.strip()):
                out.append(f"{sheet.relative_to(site)}: loads {url.strip()}")
    return out


def main() -> int:
    site = Path(sys.argv[1])
    if not (site / "index.html").is_file():
        print(f"{site} is not a built site (no index.html)")
        return 2
    found = problems(site)
    for line in found:
        print(f"REMOTE OR MISSING ASSET: {line}")
    pages = len(list(site.rglob("*.html")))
    print(f"site offline check: {pages} pages, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
