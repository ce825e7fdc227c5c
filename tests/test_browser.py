"""The built book as a reader meets it: every page of ``_build/html`` in headless Chromium.

Run after a build (``make test`` runs it after the smoke book; ``make browser`` alone)::

    python -m pytest tests/test_browser.py

One test per page of the last build (``_build/html/**/*.html``, Sphinx's ``_static`` and
``_sources`` aside). Each page is opened from ``file://`` with the network cut off and must:

- typeset every formula: each ``.math`` element holds MathJax output (``mjx-container``), no
  MathJax error (``mjx-merror``), no raw TeX (``\\(``, ``\\[``, ``$$``, ``\\begin{``,
  ``$\\name``) left in the text outside code, and MathJax itself loaded from the book's own
  ``_static`` (no network);
- show every image (``naturalWidth > 0`` once loaded; lazy images are made eager first);
- hold no cell output that is an error (``.output.traceback``/``.output.error``, a
  "Traceback (most recent call last)" in a cell output, or an ``error`` output in the executed
  notebook the page was built from);
- link only to files that exist, and to anchors that exist in them;
- load every script, stylesheet and image it references, and request nothing from the network;
- log no JavaScript error (uncaught exceptions and ``console.error``) beyond
  :data:`ALLOWED_CONSOLE_ERRORS`.

Every page is opened at two widths (:data:`VIEWPORTS`): a desktop's 1280 px and a phone's
390 px. At the phone's width the page must also

- not scroll sideways: ``document.documentElement.scrollWidth`` is at most 390, and no element
  sticks out past the right edge unless a box that scrolls holds it (a wide table, formula or
  figure scrolls inside its own box, ``_static/book.css``); content cut off by an
  ``overflow: hidden`` ancestor counts as sticking out. The test names the elements;
- not overlap its text: no block of the article (paragraph, heading, list, table, figure,
  cell) starts above the bottom of the block before it.

A full-page screenshot of each page at each width goes to
``_build/screenshots/<profile>/<page>-<width>.png``, the profile being the one of the build
(``_build/html/.profile``, written by ``book_runner``).

The browser is the system's Chromium (Debian: ``apt-get install chromium``; or set
``$CHROMIUM``), driven by Playwright; if Playwright cannot launch it, the Chromium command line
(``--dump-dom``, ``--screenshot``) is used instead, with weaker checks (images: the files exist
and decode; console: uncaught errors and failed loads only; screenshots: the first 1280x4000
pixels; ``OOD_BROWSER_DRIVER=cli`` picks it on purpose). Without Chromium the tests skip,
except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import pytest

from ood_lib.paths import build_dir

pytestmark = pytest.mark.browser

HTML = build_dir() / "html"
SCREENSHOTS = build_dir() / "screenshots"
PROFILE_MARKER = HTML / ".profile"  # book_runner.html.PROFILE_MARKER
NOT_PAGES = {"_static", "_sources", "_images"}  # Sphinx's asset folders
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
PHONE = VIEWPORTS["phone"]["width"]
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Chromium to run the browser test of the book: `sudo apt-get install chromium` "
    "(Debian/Ubuntu; .ci/run does this in CI), or point $CHROMIUM at a Chrome/Chromium binary"
)
PAGE_TIMEOUT_MS = 60_000

#: JavaScript console errors that are not defects of the book, with the reason for each.
ALLOWED_CONSOLE_ERRORS: dict[str, str] = {
    # pydata-sphinx-theme (under sphinx-book-theme 1.x) reads the light/dark mode from
    # localStorage; a reader who never picked one (every fresh browser profile, and every page
    # opened from file:// here, since each test has a fresh context) has none, the page
    # template then sets the mode to the theme's default_mode "", and the theme's script logs
    # this with console.error before falling back to "auto" (follow the system). Harmless.
    r"Got invalid theme mode: \. Resetting to auto\.": "pydata-sphinx-theme, no stored mode",
}

#: Raw TeX that MathJax should have replaced, as it would show in the page's text.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\$\\[A-Za-z]+")
#: A TeX macro inside the text of a formula (\text{...}, \texttt{...}) that MathJax printed as
#: is, e.g. ``\_`` in ``\texttt{log\_pz}`` when the textmacros extension is not loaded.
TEX_MACRO = re.compile(r"\\[A-Za-z_{}$%&#]")
#: Elements whose text is code or MathJax output, never prose with formulas.
CODE_TAGS = {"script", "style", "pre", "code", "textarea", "kbd", "samp", "noscript",
             "template", "mjx-container", "svg", "math"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "param", "source", "track", "wbr"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_chromium() -> str | None:
    """``$CHROMIUM``, else the first Chromium/Chrome on ``PATH`` or in ``/usr/bin``."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or None
    for name in BROWSER_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    return None


def not_available(reason: str) -> None:
    """Fail under CI (the browser test must run there), skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def pages() -> list[Path]:
    """Every HTML page of the last build, relative to ``_build/html``."""
    if not HTML.is_dir():
        return []
    return sorted(
        path.relative_to(HTML)
        for path in HTML.rglob("*.html")
        if not NOT_PAGES & set(path.relative_to(HTML).parts[:-1])
    )


def build_profile() -> str:
    """The profile of the last build: the runner's marker, else the only executed profile."""
    if PROFILE_MARKER.is_file():
        return PROFILE_MARKER.read_text().strip() or "unknown"
    executed = build_dir() / "executed"
    profiles = sorted(p.name for p in executed.iterdir() if p.is_dir()) if executed.is_dir() else []
    return profiles[0] if len(profiles) == 1 else "unknown"


# --------------------------------------------------------------------------- what a page holds


@dataclass
class PageFacts:
    """What the analysis of one page's DOM (after its scripts ran) found."""

    math: int = 0  # .math elements
    math_untypeset: list[str] = field(default_factory=list)  # their text, when not typeset
    mathjax_output: int = 0  # mjx-container elements
    merrors: list[str] = field(default_factory=list)
    tex_in_text: list[str] = field(default_factory=list)  # TeX macros MathJax showed as text
    raw_tex: list[str] = field(default_factory=list)
    error_outputs: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # href of <a>
    assets: list[str] = field(default_factory=list)  # src/href of scripts, styles, images
    images: list[str] = field(default_factory=list)  # src of <img>
    ids: set[str] = field(default_factory=set)


class DomAnalyser(HTMLParser):
    """Collect :class:`PageFacts` from serialised HTML (a page's DOM, or a file on disk)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.facts = PageFacts()
        # open elements: (tag, classes, is_math, holds_mathjax, text so far of a .math)
        self.stack: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        f = self.facts
        for key in ("id",) + (("name",) if tag == "a" else ()):
            if a.get(key):
                f.ids.add(a[key])
        if tag == "a" and "href" in a:
            f.links.append(a["href"])
        if tag == "img" and a.get("src"):
            f.images.append(a["src"])
            f.assets.append(a["src"])
        if tag == "script" and a.get("src"):
            f.assets.append(a["src"])
        if tag == "link" and a.get("href") and {"stylesheet", "icon", "preload"} & set(
            a.get("rel", "").split()
        ):
            f.assets.append(a["href"])
        if tag == "mjx-container":
            f.mathjax_output += 1
            for el in reversed(self.stack):
                if el["math"]:
                    el["typeset"] = True
                    break
        if tag == "mjx-merror":
            f.merrors.append(a.get("data-mjx-error", "") or "(MathJax error)")
        if {"output"} <= classes and classes & {"traceback", "error"}:
            f.error_outputs.append(f"<{tag} class={a.get('class')!r}>")
        if tag in VOID_TAGS:
            return
        self.stack.append({
            "tag": tag,
            "math": "math" in classes and tag in {"span", "div"},
            "typeset": False,
            "text": "",
            "code": tag in CODE_TAGS or "highlight" in classes,
            "cell_output": "cell_output" in classes,
            "mtext": tag == "mtext" and any(el["tag"] == "mjx-assistive-mml" for el in self.stack),
        })
        if self.stack[-1]["math"]:
            f.math += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS or not any(el["tag"] == tag for el in self.stack):
            return
        while self.stack:
            el = self.stack.pop()
            if el["math"] and not el["typeset"]:
                self.facts.math_untypeset.append(el["text"].strip()[:80])
            if el["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            if el["math"]:
                el["text"] += data
        if self.stack and self.stack[-1]["mtext"] and TEX_MACRO.search(data):
            self.facts.tex_in_text.append(data.strip()[:80])
        if any(el["cell_output"] for el in self.stack) and (
            "Traceback (most recent call last)" in data
        ):
            self.facts.error_outputs.append(data.strip()[:200])
        if any(el["code"] for el in self.stack):
            return
        match = RAW_TEX.search(data)
        if match:  # one example per text node
            start = max(match.start() - 30, 0)
            self.facts.raw_tex.append(data[start : match.end() + 30].strip())


def analyse(html: str) -> PageFacts:
    parser = DomAnalyser()
    parser.feed(html)
    parser.close()
    return parser.facts


@functools.cache
def ids_in(path: Path) -> frozenset[str]:
    """The ids (and ``<a name>``) of an HTML file as built (before scripts run)."""
    return frozenset(analyse(path.read_text(encoding="utf-8", errors="replace")).ids)


def local_target(page_url: str, reference: str) -> tuple[Path, str] | None:
    """The file (and fragment) a reference of the page points to; ``None`` if not local."""
    url = urlparse(urljoin(page_url, reference))
    if url.scheme != "file":
        return None
    return Path(unquote(url.path)), unquote(url.fragment)


REFRESH = re.compile(
    r"""<meta\s+http-equiv=["']?refresh["']?\s+content=["']\s*\d+\s*;\s*url=([^"']+)["']""",
    re.IGNORECASE,
)


def redirect_target(path: Path) -> Path | None:
    """Where a redirect page (``<meta http-equiv="refresh">``, e.g. the root ``index.html``)
    sends the reader, or ``None`` for an ordinary page."""
    m = REFRESH.search(path.read_text(encoding="utf-8", errors="replace")[:4000])
    if m is None:
        return None
    target = local_target(path.as_uri(), m.group(1).strip())
    return target[0] if target else None


# --------------------------------------------------------------------------- the browsers


@dataclass
class Visit:
    """One page as the browser showed it."""

    url: str  # where the reader ended up (a redirect page's target)
    facts: PageFacts
    console_errors: list[str]
    network: list[str]  # requests that tried to leave the machine
    failed_loads: list[str]  # local files the page could not load
    broken_images: list[str]
    mathjax_loaded: bool | None  # None: the page has no formulas
    scroll_width: int | None = None  # document.documentElement.scrollWidth (None: not measured)
    too_wide: list[str] = field(default_factory=list)  # elements past the viewport's right edge
    overlaps: list[str] = field(default_factory=list)  # article blocks drawn over the one before


#: In the page, after its scripts ran: how wide the document is, which elements stick out past
#: the viewport outside any box that scrolls them, and which blocks of the article overlap the
#: block before them.
LAYOUT_SCRIPT = """(width) => {
    const describe = el => el.tagName.toLowerCase()
        + (el.id ? "#" + el.id : "")
        + (el.className && typeof el.className === "string"
           ? "." + el.className.trim().split(/\\s+/).slice(0, 2).join(".") : "");
    // the nearest ancestor that does not let its content overflow: OK if it scrolls (the
    // reader can reach what sticks out) and itself fits; "hidden"/"clip" cut the content off
    const scrolls = el => {
        for (let p = el.parentElement; p; p = p.parentElement) {
            const o = getComputedStyle(p).overflowX;
            if (o === "auto" || o === "scroll")
                return p.getBoundingClientRect().right <= width + 1;
            if (o === "hidden" || o === "clip") return false;
        }
        return false;
    };
    const tooWide = [];
    for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        if (r.width === 0 || r.right <= width + 1 || r.left >= width
            || style.position === "fixed" || style.visibility === "hidden"
            || el.closest("mjx-assistive-mml"))  // MathJax's copy for screen readers, unseen
            continue;
        if (!scrolls(el) && !tooWide.some(t => t.contains(el)))
            tooWide.push(el);
    }
    const overlaps = [];
    const blocks = "p, h1, h2, h3, h4, ul, ol, dl, table, figure, div.cell, div.admonition";
    for (const el of document.querySelectorAll(".bd-article " + blocks)) {
        const prev = el.previousElementSibling;
        if (!prev || !prev.matches(blocks)) continue;
        const a = prev.getBoundingClientRect(), b = el.getBoundingClientRect();
        if (a.height && b.height && b.top < a.bottom - 2)
            overlaps.push(describe(prev) + " / " + describe(el));
    }
    return {scrollWidth: document.documentElement.scrollWidth,
            tooWide: tooWide.slice(0, 8).map(describe), overlaps: overlaps.slice(0, 8)};
}"""


class PlaywrightChromium:
    """Chromium driven by Playwright (the system's binary; Playwright never downloads one)."""

    name = "playwright"

    def __init__(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        try:
            self.browser = self.playwright.chromium.launch(
                executable_path=executable, args=LAUNCH_ARGS, headless=True
            )
        except BaseException:
            self.playwright.stop()
            raise

    def close(self) -> None:
        self.browser.close()
        self.playwright.stop()

    def visit(self, path: Path, screenshot: Path, lands_on: Path, viewport: dict[str, int]
              ) -> Visit:
        """Open ``path`` in a window of ``viewport``'s size; ``lands_on`` is where it ends up
        (itself unless it redirects)."""
        context = self.browser.new_context(viewport=viewport, device_scale_factor=1)
        try:
            return self._visit(context, path, screenshot, lands_on, viewport["width"])
        finally:
            context.close()

    def _visit(self, context: Any, path: Path, screenshot: Path, lands_on: Path, width: int
               ) -> Visit:
        network: list[str] = []
        console: list[str] = []
        failed: list[str] = []

        def refuse(route: Any) -> None:
            network.append(route.request.url)
            route.abort()

        context.route(re.compile(r"^(https?|wss?|ftp)://"), refuse)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
        page.on(
            "requestfailed",
            lambda r: failed.append(f"{r.url} ({r.failure})")
            if r.url.startswith("file:") else None,
        )
        page.goto(path.as_uri(), wait_until="load")
        if lands_on != path:
            page.wait_for_url(lands_on.as_uri(), wait_until="load")
        mathjax = None
        if page.locator(".math").count():
            try:
                page.wait_for_function(
                    "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                    timeout=30_000,
                )
                page.evaluate("() => MathJax.startup.promise")
                mathjax = True
            except Exception:  # noqa: BLE001 - reported by the test as "MathJax did not load"
                mathjax = False
        broken = page.evaluate(
            """async () => {
                const images = [...document.images];
                for (const img of images) img.loading = "eager";
                await Promise.all(images.map(img => img.decode().catch(() => null)));
                return images.filter(img => !(img.complete && img.naturalWidth > 0))
                             .map(img => img.getAttribute("src"));
            }"""
        )
        page.evaluate("() => document.fonts.ready.then(() => true)")
        layout = page.evaluate(LAYOUT_SCRIPT, width)
        page.screenshot(path=str(screenshot), full_page=True)
        facts = analyse(page.content())
        return Visit(lands_on.as_uri(), facts, console, network, failed, broken, mathjax,
                     layout["scrollWidth"], layout["tooWide"], layout["overlaps"])


class CommandLineChromium:
    """Fallback: ``chromium --headless --dump-dom`` / ``--screenshot``, one process per call."""

    name = "command line"
    CONSOLE = re.compile(r':CONSOLE[:(]\d+\)?\] "(?P<message>.*)", source: (?P<source>\S*)')

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def close(self) -> None:
        pass

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.executable, "--headless", *LAUNCH_ARGS, "--hide-scrollbars",
                   "--virtual-time-budget=20000", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    def visit(self, path: Path, screenshot: Path, lands_on: Path, viewport: dict[str, int]
              ) -> Visit:
        """Dump and screenshot ``lands_on`` (a redirect page's target: no waiting here); the
        layout of the page is not measured."""
        url = lands_on.as_uri()
        dump = self._run("--enable-logging=stderr", "--v=0", "--dump-dom", url)
        if dump.returncode != 0 or not dump.stdout.strip():
            raise RuntimeError(f"chromium --dump-dom {url} failed: {dump.stderr[-2000:]}")
        self._run(f"--window-size={viewport['width']},4000", f"--screenshot={screenshot}", url)
        console, failed = [], []
        for line in dump.stderr.splitlines():
            m = self.CONSOLE.search(line)
            if not m:
                continue
            message = m["message"]
            if message.startswith("Uncaught"):  # the command line cannot tell log from error
                console.append(f"uncaught: {message}")
            elif message.startswith("Failed to load resource"):
                failed.append(f"{m['source']} ({message})")
        facts = analyse(dump.stdout)
        broken = [src for src in facts.images if not image_file_ok(url, src)]
        mathjax = facts.mathjax_output > 0 if facts.math else None
        return Visit(url, facts, console, [], failed, broken, mathjax)


def image_file_ok(page_url: str, src: str) -> bool:
    """Fallback image check: a local image file exists and decodes."""
    if src.startswith("data:"):
        return True
    target = local_target(page_url, src)
    if target is None:
        return False
    file = target[0]
    if not file.is_file() or file.stat().st_size == 0:
        return False
    if file.suffix.lower() == ".svg":
        return True
    from PIL import Image

    try:
        with Image.open(file) as img:
            img.verify()
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.fixture(scope="module")
def browser() -> Any:
    executable = find_chromium()
    if executable is None:
        not_available(f"no Chromium found; {INSTALL_HINT}")
    try:
        if os.environ.get("OOD_BROWSER_DRIVER") == "cli":  # to try the fallback on purpose
            raise RuntimeError("OOD_BROWSER_DRIVER=cli")
        driver: Any = PlaywrightChromium(executable)
    except Exception as exc:  # noqa: BLE001 - any launch problem: fall back to the CLI
        warnings.warn(
            f"Playwright could not launch {executable} ({type(exc).__name__}: {exc}); "
            "using the Chromium command line (weaker checks)",
            stacklevel=1,
        )
        driver = CommandLineChromium(executable)
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def screenshot_dir() -> Path:
    folder = SCREENSHOTS / build_profile()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------- the tests


PAGES = pages()


def executed_notebook(page: Path) -> Path | None:
    """The executed notebook a page was built from, if it was one."""
    staged = build_dir() / "book_src" / build_profile() / page.with_suffix(".ipynb")
    return staged if staged.is_file() else None


@pytest.mark.parametrize("width", list(VIEWPORTS))
@pytest.mark.parametrize("page", PAGES or [None], ids=[p.as_posix() for p in PAGES] or ["none"])
def test_page(page: Path | None, width: str, request: pytest.FixtureRequest) -> None:
    if page is None:
        not_available(
            f"no built book in {HTML}: build it first, e.g. "
            "`python -m book_runner --profile smoke` (or `make smoke`)"
        )
    browser = request.getfixturevalue("browser")
    screenshot_dir = request.getfixturevalue("screenshot_dir")
    path = HTML / page
    viewport = VIEWPORTS[width]
    shot = screenshot_dir / (page.with_suffix("").as_posix().replace("/", "__")
                             + f"-{viewport['width']}.png")
    lands_on = redirect_target(path) or path
    assert lands_on.is_file(), f"{page} redirects to {lands_on}, which does not exist"
    visit = browser.visit(path, shot, lands_on, viewport)
    facts = visit.facts
    problems: list[str] = []

    # formulas
    if visit.mathjax_loaded is False:
        problems.append("MathJax did not load (is _static/mathjax there? no network here)")
    if facts.math_untypeset:
        problems.append(f"{len(facts.math_untypeset)} of {facts.math} formulas not typeset, "
                        f"e.g. {facts.math_untypeset[:3]}")
    if facts.merrors:
        problems.append(f"MathJax errors: {facts.merrors[:5]}")
    if facts.tex_in_text:
        problems.append(f"TeX shown as text inside formulas: {facts.tex_in_text[:5]}")
    if facts.raw_tex:
        problems.append(f"raw TeX in the page's text: {facts.raw_tex[:5]}")

    # layout at a phone's width
    if viewport["width"] == PHONE and visit.scroll_width is not None:
        if visit.scroll_width > PHONE or visit.too_wide:
            problems.append(f"content wider than {PHONE} px: scrollWidth {visit.scroll_width}; "
                            f"sticking out or cut off: {visit.too_wide}")
        if visit.overlaps:
            problems.append(f"blocks drawn over the one before them: {visit.overlaps}")

    # images and outputs
    if visit.broken_images:
        problems.append(f"images that did not load: {visit.broken_images}")
    notebook = executed_notebook(page)
    if notebook is not None:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        for index, cell in enumerate(nb.get("cells", [])):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"{notebook.name} cell {index}: error output "
                                    f"{out.get('ename')}: {out.get('evalue', '')[:200]}")
    if facts.error_outputs:
        problems.append(f"error outputs in the page: {facts.error_outputs[:5]}")

    # links and assets
    url = visit.url
    for href in facts.links:
        if not href or href.startswith(("mailto:", "javascript:", "tel:")):
            continue
        target = local_target(url, href)
        if target is None:
            continue  # external: not checked offline
        file, fragment = target
        if not file.is_file():
            problems.append(f"broken link {href!r}: no file {file}")
        elif fragment and fragment not in (facts.ids if file == lands_on else ids_in(file)):
            problems.append(f"broken link {href!r}: no anchor #{fragment} in {file.name}")
    for ref in facts.assets:
        if ref.startswith("data:"):
            continue
        target = local_target(url, ref)
        if target is None:
            problems.append(f"asset from the network (not available offline): {ref}")
        elif not target[0].is_file():
            problems.append(f"missing asset {ref}")
    if visit.failed_loads:
        problems.append(f"failed to load: {visit.failed_loads}")
    if visit.network:
        problems.append(f"requests to the network (the book must work offline): "
                        f"{sorted(set(visit.network))}")

    # the console
    errors = [
        message for message in visit.console_errors
        if not any(re.fullmatch(p, message) for p in ALLOWED_CONSOLE_ERRORS)
    ]
    if errors:
        problems.append(f"JavaScript console errors: {errors}")

    assert shot.is_file() and shot.stat().st_size > 0, f"no screenshot at {shot}"
    assert not problems, f"{page} at {viewport['width']} px ({browser.name}):\n  " + "\n  ".join(
        problems)
