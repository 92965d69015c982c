"""report.html and compare.html as a reader meets them: one self-contained page per scored run,
training run and compare folder (no script, nothing loaded from elsewhere), every number the
one in metrics.json or compare.json, a model's raw text shown as text, never as markup; and
`mcqa view`, which serves one folder on 127.0.0.1 and nothing outside it."""

from __future__ import annotations

import http.client
import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import CLI, REPO, assert_user_error, cli_env, load, run_cli, tree
from markupsafe import escape
from report_folders import (
    KEPT_STEP,
    MAX_REPORT_BYTES,
    compare_folder,
    score_run,
    training_run,
)

from mcqa.compare.page import write_compare_html
from mcqa.eval.view import make_server

pytestmark = pytest.mark.usefixtures("synth_tasks")  # conftest: the `synth` task is discoverable


@pytest.fixture(scope="module")
def folders(tmp_path_factory, synth_tasks):
    root = tmp_path_factory.mktemp("reports")
    scored, run = score_run(root), training_run(root)
    cmp, result = compare_folder(root, run)
    return {"scored": scored, "run": run, "cmp": cmp, "result": result}


def _links(html: str) -> tuple[list[str], list[str]]:
    return re.findall(r'\bsrc="([^"]*)"', html), re.findall(r'\bhref="([^"]*)"', html)


def _rows_table(html: str) -> str:
    start = html.index('id="rows"')
    return html[start : html.index("</table>", start)]


def _self_contained(html: str) -> None:
    """No script, every image inline, every link a relative path (nothing fetched or run)."""
    assert "<script" not in html.lower()
    sources, links = _links(html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(":" not in h and not h.startswith("/") for h in links), links
    assert "default-src 'none'" in html


def test_a_scored_run_has_one_self_contained_page_with_the_numbers_of_metrics_json(folders):
    folder = folders["scored"]
    page = folder / "report.html"
    html = page.read_text(encoding="utf-8")
    m = json.loads((folder / "metrics.json").read_text())
    _self_contained(html)
    assert page.stat().st_size < MAX_REPORT_BYTES  # the whole notification test split, with probabilities
    joint = m["joint"]["accuracy"]
    assert f'id="headline" data-value="{joint}">{100 * joint:.1f}%<' in html
    assert f"95% CI [{100 * m['joint']['ci'][0]:.1f}, {100 * m['joint']['ci'][1]:.1f}]" in html
    for fm in m["fields"].values():
        assert f"<b>{100 * fm['accuracy']:.1f}%</b>" in html
    assert "mcqa score --task notification --split test --predictions" in html  # the command that made it
    # confusion matrices: a row per gold class, the parse-failure column last, counts as metrics.json has them
    for fm in m["fields"].values():
        for gold, row in zip(fm["confusion"]["gold"], fm["confusion"]["matrix"]):
            cells = re.search(rf'<tr><th class="gold">{gold}</th>(.*?)</tr>', html, re.S)
            shown = [int(c or 0) for c in re.findall(r">(\d*)</td>", cells.group(1))]
            assert shown == row + [sum(row)]  # each answer, parse failures, the row's total
    assert html.count('alt="reliability diagram of folder"') == 1 and "reliability diagram of priority" not in html
    # parse failures by kind, with the raw text escaped: markup from a model is shown, never run
    for status in ("no_json", "invalid_json", "out_of_label_set"):
        assert f"<h3><code>{status}</code>: {m['parse']['counts'][status]}</h3>" in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html and "example.com" not in _links(html)[0]


def test_the_most_confident_mistakes_come_first_with_their_inputs(folders):
    folder = folders["scored"]
    html = (folder / "report.html").read_text(encoding="utf-8")
    records = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    wrong = sorted(
        (r for r in records if r["status"] == "ok" and not r["joint"]),
        key=lambda r: -r["probs"]["folder"][r["parsed"]["folder"]],
    )
    table = html[html.index("Most confident mistakes") :]
    shown = re.findall(r'<tr><td class="mono">([^<]+)</td>', table)
    assert shown[0] == wrong[0]["id"] and len(shown) == 12
    probs = [float(p) for p in re.findall(r'<td class="num">(0\.\d{3})</td></tr>', table)]
    assert probs == sorted(probs, reverse=True) and probs[0] == pytest.approx(
        wrong[0]["probs"]["folder"][wrong[0]["parsed"]["folder"]], abs=1e-3
    )
    example = next(e for e in load("notification", "test", "seed") if e.id == wrong[0]["id"])
    assert escape(f"title: {example.input['title']}") in table  # the input excerpt


def test_a_training_run_report_adds_the_loss_curve_and_validation_per_epoch_with_the_kept_epoch(folders):
    run = folders["run"]
    html = (run / "test" / "report.html").read_text(encoding="utf-8")
    _self_contained(html)
    assert 'alt="training loss by epoch"' in html and 'alt="validation per epoch"' in html
    kept = re.findall(r'<tr class="kept"><td class="num">([\d.]+)</td><td class="num">(\d+)</td>', html)
    assert kept == [("2", str(KEPT_STEP))]
    assert "validation joint = 0.800" in html
    m = json.loads((run / "test" / "metrics.json").read_text())
    assert f'data-value="{m["joint"]["accuracy"]}"' in html


def test_compare_html_links_each_row_to_its_report_and_marks_the_paired_differences(folders):
    out, result = folders["cmp"], folders["result"]
    html = (out / "compare.html").read_text(encoding="utf-8")
    _self_contained(html)
    rows = re.findall(r'<tr(?: class="kept")?>\s*<td>(.*?)</td>', _rows_table(html), re.S)
    assert len(rows) == len(result["rows"]) == 3
    for r, cell in zip(result["rows"], rows):
        link = re.search(r'<a href="([^"]+)">', cell)
        assert link, f"{r['name']}: no link to its report"
        assert (out / link.group(1)).resolve() == (Path(r["folder"]) / "report.html").resolve()
        d = r["paired"]
        marked = bool(d) and any(x["ci"][0] > 0 or x["ci"][1] < 0 for x in [d["joint"], *d["fields"].values()])
        assert ('class="marked"' in cell) == marked, r["name"]
    assert [float(v) for v in re.findall(r'class="num joint" data-value="([^"]+)"', html)] == [
        r["joint"] for r in result["rows"]
    ]
    assert "../run/test/report.html" in html  # the training run's own report, outside the compare folder


def test_compare_html_from_the_compare_json_of_real_runs(tmp_path):
    """bench's notification table (paired against TF-IDF, a stack row): every row marked exactly
    when one of its paired intervals excludes 0; no row links to a report that is not there."""
    result = json.loads((REPO / "bench" / "compare" / "notification_worth_it" / "compare.json").read_text())
    for r in result["rows"]:
        r["folder"] = str(tmp_path / "absent" / r["name"])
    html = write_compare_html(tmp_path, result).read_text(encoding="utf-8")
    _self_contained(html)
    names = dict(re.findall(r'<td>([^<]+?)( <span class="marked"[^>]*>\*</span>)?<div class="ci">', _rows_table(html)))
    assert list(names) == [r["name"] for r in result["rows"]]

    def clear(d: dict) -> bool:
        return d["ci"][0] > 0 or d["ci"][1] < 0

    want = {
        r["name"]
        for r in result["rows"]
        if r["paired"] and (clear(r["paired"]["joint"]) or any(map(clear, r["paired"]["fields"].values())))
    }
    assert {n for n, mark in names.items() if mark} == want and {"majority", "knn"} < want
    assert "<a href" not in _rows_table(html)
    stack = next(r for r in result["rows"] if r["kind"] == "stack")
    d = stack["paired"]["joint"]
    assert (
        f"{100 * d['difference']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]" in html
    )  # as compare.md says
    assert "<h2>Stack</h2>" in html


# ---------------------------------------------------------------- mcqa view


def test_view_print_names_the_page_of_each_kind_of_folder_and_refuses_other_paths(folders, tmp_path):
    for folder, page in (
        (folders["scored"], folders["scored"] / "report.html"),
        (folders["run"], folders["run"] / "test" / "report.html"),
        (folders["cmp"], folders["cmp"] / "compare.html"),
    ):
        done = run_cli(["view", "--print", folder], tmp_path)
        assert done.rc == 0 and done.out.strip() == str(page), done.err
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    assert_user_error(run_cli(["view", old], tmp_path), "no report.html", "score it again")
    assert_user_error(run_cli(["view", tmp_path / "nowhere"], tmp_path), "no such folder")
    assert_user_error(run_cli(["view", "--print", CLI], tmp_path), "not a run or compare folder")


def _get(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)  # sent as written: no client-side clean-up of '..'
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_the_server_serves_that_folder_only_and_writes_nothing(tmp_path):
    received = tmp_path / "received"
    (received / "sub").mkdir(parents=True)
    (received / "report.html").write_text("<p>report</p>")
    (received / "sub" / "note.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    (received / "secret").symlink_to(tmp_path / "secret.txt")
    (received / "up").symlink_to(tmp_path)
    before = tree(received)
    server = make_server(received / "report.html")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        status, headers, body = _get(port, "/report.html")
        assert status == 200 and body == b"<p>report</p>" and "default-src 'none'" in headers["Content-Security-Policy"]
        status, headers, _ = _get(port, "/")
        assert status == 302 and headers["Location"] == "/report.html"
        assert _get(port, "/sub/note.txt")[2] == b"inside"
        for path in (
            "/secret",
            "/up/secret.txt",
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/sub/..%2f..%2fsecret.txt",
            "/sub/",
            "/nothing",
        ):
            status, _, body = _get(port, path)
            assert status == 404 and b"outside" not in body, path
    finally:
        server.shutdown()
        server.server_close()
    assert tree(received) == before


def test_view_serves_until_ctrl_c_and_stops_without_a_traceback(folders):
    """A new process, as a user runs it: the URL is printed, the page is served, Ctrl-C ends it
    with exit code 0."""
    # Ctrl-C as at a terminal: an ignored SIGINT is inherited across exec (a test runner started
    # in the background, or a library that ignored it in this worker, passes it on), and Python
    # then keeps it ignored, so the child gets the default disposition back first.
    proc = subprocess.Popen(
        [sys.executable, str(CLI), "view", str(folders["cmp"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    said, url = [], None
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            said.append(proc.stdout.readline())
            url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+)", said[-1])
            if not said[-1]:
                break
        assert url and "Ctrl-C" in said[-1], said
        status, _, body = _get(int(url.group(1)), url.group(2).rstrip(";"))
        assert status == 200 and b"mcqa compare: synth" in body
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"still serving 60 s after Ctrl-C; it printed {said!r}, stderr: {err[-2000:]}")
    assert proc.returncode == 0 and "Traceback" not in err, err
