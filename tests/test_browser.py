"""The pages in a real browser: headless Chromium opens a scored run's report.html, a training
run's and a compare.html from their files with the network off, and each page logs no error,
asks for nothing but its own file and inline images, draws every chart at a size a reader can
see, and shows as its headline the number metrics.json (or compare.json) holds. A screenshot of
each is saved beside the test's folders."""

from __future__ import annotations

import json

import pytest
from browser import Browser, chromium
from report_folders import compare_folder, score_run, training_run

EXE = chromium()
pytestmark = [
    pytest.mark.skipif(EXE is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.usefixtures("synth_tasks"),
]

# What the test reads from a loaded page: every image and chart with its drawn size (an <img>
# also says whether it decoded), the report's headline and the compare table's joint column.
MEASURE = """(() => {
  const charts = [...document.querySelectorAll('img, svg, canvas, .chart')].map(e => {
    const r = e.getBoundingClientRect();
    return {what: e.getAttribute('alt') || e.className, width: r.width, height: r.height,
            decoded: e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)};
  });
  const head = document.getElementById('headline');
  return {charts, headline: head ? [head.dataset.value, head.textContent] : null,
          joint: [...document.querySelectorAll('td.joint')].map(td => td.dataset.value)};
})()"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory, synth_tasks):
    root = tmp_path_factory.mktemp("pages")
    scored, run = score_run(root), training_run(root)
    cmp, result = compare_folder(root, run)
    return {
        "score": (scored / "report.html", json.loads((scored / "metrics.json").read_text())),
        "train": (run / "test" / "report.html", json.loads((run / "test" / "metrics.json").read_text())),
        "compare": (cmp / "compare.html", result),
    }


@pytest.fixture(scope="module")
def browser():
    b = Browser(EXE)
    yield b
    b.close()


@pytest.mark.parametrize("kind", ["score", "train", "compare"])
def test_the_page_renders_offline_with_no_error_and_every_chart_drawn(pages, browser, kind):
    page, numbers = pages[kind]
    shot = page.parent / f"{kind}-screenshot.png"
    loaded = browser.open(page, MEASURE, screenshot=shot)
    assert loaded.errors == []
    assert loaded.requests and all(u.startswith(("file:", "data:")) for u in loaded.requests), loaded.requests
    charts = loaded.value["charts"]
    assert len(charts) >= {"score": 2, "train": 4, "compare": 2}[kind]
    for c in charts:
        assert c["width"] > 50 and c["height"] > 50 and c["decoded"], c
    if kind == "compare":
        assert [float(v) for v in loaded.value["joint"]] == [r["joint"] for r in numbers["rows"]]
    else:
        value, text = loaded.value["headline"]
        assert float(value) == numbers["joint"]["accuracy"] and text == f"{100 * numbers['joint']['accuracy']:.1f}%"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
