"""The HTML evidence pack in a real browser: headless Chromium, offline, no request made.

Three months of history (tests/assessor_history.py: replayed scans, three people, an
outage) make a pack; Chromium (Debian's `chromium`, which `make test` installs) opens its
report.html once, with the network off (`unshare -n` when we may, and flags that stop the
browser's own background traffic otherwise), and gives back the DOM it rendered
(`--dump-dom`), a screenshot and its network log. The checks: the verdict opens the page
with the four sentences of domain/report_verdict.py and working links to the rows behind
them, the three charts are SVG in the DOM (or say their data is not in the pack), and the
page asked the network for nothing. A page that does fetch something is opened too, so the
network check is shown to catch a request.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from portconsole.core.domain.report_charts import charts
from portconsole.core.domain.report_figures import figures_sha256
from portconsole.core.domain.report_render import render_html, render_markdown
from portconsole.core.domain.report_verdict import verdicts
from tests.assessor_history import END, START, build

CHROMIUM = Path("/usr/bin/chromium")
SHOT = (1280, 2200)

# The tests that start Chromium; the others read the same pack without a browser.
browser = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent: `make test` installs Debian's chromium package",
    ),
]


def in_browser(test: Any) -> Any:
    for mark in browser:
        test = mark(test)
    return test


@dataclass
class Browsed:
    dom: str
    screenshot: Path
    net_log: Path
    isolated: bool  # run inside a network namespace of its own


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def browse(page: Path, work: Path) -> Browsed:
    """One Chromium start: the rendered DOM, a screenshot and the network log of `page`."""
    profile = work / "profile"
    profile.mkdir(parents=True)
    shot, net_log = work / "screenshot.png", work / "net-log.json"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
        # Outside a namespace of its own, no host name resolves (loopback stays reachable).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
        f"--window-size={SHOT[0]},{SHOT[1]}", f"--screenshot={shot}",
        f"--log-net-log={net_log}", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    isolated = _can_unshare()
    if isolated:
        command = ["unshare", "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    return Browsed(done.stdout, shot, net_log, isolated)


# --------------------------------------------------------------------------- reading results


class Dom(HTMLParser):
    """What the checks need from the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.sources: list[str] = []  # src, srcset, data, poster, action
        self.tags: list[str] = []
        self.svg_in: dict[str, int] = {}  # figure id -> <svg> count
        self.svg_text: dict[str, str] = {}  # figure id -> its text
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if "href" in values or "xlink:href" in values:
            self.hrefs.append(str(values.get("href") or values.get("xlink:href")))
        for name in ("src", "srcset", "data", "poster", "action", "formaction"):
            if name in values:
                self.sources.append(str(values[name]))
        if tag == "figure":
            self._figure = values.get("id")
        elif tag == "svg" and self._figure:
            self.svg_in[self._figure] = self.svg_in.get(self._figure, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._figure:
            self.svg_text[self._figure] = self.svg_text.get(self._figure, "") + data


def read_dom(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    return dom


def page_requests(net_log: Path) -> list[str]:
    """URLs the page asked for. The browser's own requests (time, component updates) have
    no initiating origin and no isolation key; the page's have its file:// origin."""
    log = json.loads(net_log.read_text("utf-8"))
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    found = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        browser_own = (
            params.get("initiator") == "not an origin"
            and params.get("network_isolation_key") == "null null"
        )
        if not browser_own:
            found.append(str(params["url"]))
    return found


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --------------------------------------------------------------------------- the pack


@dataclass
class Pack:
    root: Path
    page: Path
    document: dict[str, Any]


@dataclass
class Opened:
    page: Path
    document: dict[str, Any]
    browsed: Browsed
    dom: Dom


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pack]:
    root = tmp_path_factory.mktemp("pack-html")
    history = build(root / "history")
    written = history.monitor.export_report(root / "pack", start=START, end=END, fmt="html")
    page = next(p for p in written if p.name == "report.html")
    history.monitor.export_report(root / "figures.json", start=START, end=END, fmt="json")
    document = json.loads((root / "figures.json").read_bytes())
    history.monitor.close()
    yield Pack(root, page, document)


@in_browser
def test_the_pack_in_headless_chromium(pack: Pack) -> None:
    """One browser start for every check of the pack's page (a start costs about a second)."""
    browsed = browse(pack.page, pack.root / "browser")
    opened = Opened(pack.page, pack.document, browsed, read_dom(browsed.dom))
    check_the_verdict_opens_the_page_and_links_to_its_rows(opened)
    check_the_three_charts_are_rendered_svg(opened)
    check_the_page_fetches_nothing(opened)


def check_the_verdict_opens_the_page_and_links_to_its_rows(opened: Opened) -> None:
    dom, text = opened.dom, opened.browsed.dom
    assert "<h2>Verdict</h2>" in text
    # First on the page: before the charts, the table of contents and every section.
    assert text.index('id="verdict"') < text.index('id="charts"') < text.index('id="about"')
    for verdict in verdicts(opened.document):
        assert f"verdict-{verdict.key}" in dom.ids
        assert html.escape(verdict.figure, quote=False) in text, verdict.figure
    # The history's outage (no scan Oct 20-25) is the one gap, closed with its cause.
    assert "1 gap" in text and "closed with a root cause" in text
    assert "from 2026-10-20 06:00 UTC to 2026-10-26 06:00 UTC" in text
    # Every link lands on an element of the page: the rows behind each sentence exist.
    internal = [h[1:] for h in dom.hrefs]
    assert {"t-continuity", "t-sla_breaches", "t-audit_chain"} <= set(internal)
    missing = [h for h in internal if h not in dom.ids]
    assert not missing, missing


def check_the_three_charts_are_rendered_svg(opened: Opened) -> None:
    dom, document = opened.dom, opened.document
    assert dom.svg_in.get("chart-coverage") == 1
    assert dom.svg_in.get("chart-response") == 1
    assert {"chart-coverage-title", "chart-coverage-desc", "chart-response-title"} <= dom.ids
    coverage = dom.svg_text["chart-coverage"]
    assert "gap 2026-10-20T06:00:00Z to 2026-10-26T06:00:00Z" in coverage  # its <desc>
    assert "gap 6d 0h 0m" in coverage  # the label on the bar
    response = dom.svg_text["chart-response"]
    for severity, hours in document["parameters"]["sla_hours"].items():
        assert f"{severity} (" in response and f"SLA {hours:g} h" in response
    population = document.get("population") or {}
    if population.get("series") is not None:
        assert dom.svg_in.get("chart-ports") == 1
    else:  # said in words, not drawn
        assert "chart-ports" in dom.ids and "chart-ports" not in dom.svg_in
        assert "not in this pack" in dom.svg_text["chart-ports"]
    assert "@media print" in opened.browsed.dom and "size: A4" in opened.browsed.dom
    # The screenshot was taken at the window's size and is not an empty page.
    assert png_size(opened.browsed.screenshot) == SHOT
    assert opened.browsed.screenshot.stat().st_size > 50_000


def check_the_page_fetches_nothing(opened: Opened) -> None:
    dom = opened.dom
    assert page_requests(opened.browsed.net_log) == []
    assert all(h.startswith("#") for h in dom.hrefs)
    assert dom.sources == []
    assert not {"script", "link", "iframe", "object", "embed", "img"} & set(dom.tags)
    assert "url(" not in opened.browsed.dom and "@import" not in opened.browsed.dom


@in_browser
def test_the_network_check_catches_a_page_that_fetches(tmp_path: Path) -> None:
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/pixel.png">'
        '<img src="https://portconsole.invalid/logo.png"></body></html>'
    )
    browsed = browse(page, tmp_path / "browser")
    assert sorted(page_requests(browsed.net_log)) == [
        "http://127.0.0.1:9/pixel.png",
        "https://portconsole.invalid/logo.png",
    ]


# --------------------------------------------------------------------------- without a browser


def test_the_verdict_is_derived_and_never_changes_the_figures(pack: Pack) -> None:
    document = copy.deepcopy(pack.document)
    markdown = render_markdown(document).decode()
    render_html(document)
    assert document == pack.document  # rendering adds nothing to the document
    assert figures_sha256(document) == document["figures_sha256"]
    assert "## Verdict" in markdown
    for verdict in verdicts(document):
        assert f"{verdict.label}: {verdict.figure}." in markdown


def test_an_older_document_falls_back_and_says_so(pack: Pack) -> None:
    older = {k: v for k, v in pack.document.items() if k not in ("continuity", "population")}
    found = {v.key: v for v in verdicts(older)}
    assert "1 monitoring gap recorded" in found["continuity"].text
    assert "no coverage ledger" in found["continuity"].text
    assert "no open-port population" in found["exposure"].text
    assert "127.0.0.2:8080/tcp" in found["exposure"].text  # the port finding still open
    coverage, ports, response = charts(older)
    assert ports.svg is None and "not in this pack" in ports.caption
    assert coverage.svg is not None and "no coverage ledger" in coverage.caption
    assert coverage.svg.count("<line") > 84  # a tick per successful scan, and the axis
    assert response.svg is not None and "SLA 24 h" in response.svg


def test_text_from_the_records_is_inert_in_the_verdict_and_charts(pack: Pack) -> None:
    hostile = copy.deepcopy(pack.document)
    name = '<script>alert(1)</script>"[x](javascript:1)'
    for group in hostile["continuity"]["groups"]:
        group["group"] = name
    for row in hostile["findings"]:
        row["host"] = name
    page = render_html(hostile).decode()
    assert "<script" not in page and "&lt;script&gt;" in page
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    markdown = render_markdown(hostile).decode()
    verdict = markdown[markdown.index("## Verdict") : markdown.index("## About")]
    assert "<script" not in verdict and "](javascript:" not in verdict
