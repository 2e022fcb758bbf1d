"""Every job's report.html, opened in a real headless Chromium (Debian's `chromium`).

For each main job present in this checkout (plus ``selfcheck``, so the check never runs on
nothing) a small run is made, then:

- a screenshot is taken and is not blank;
- every figure the run wrote is in the page, decodes (in the browser: ``naturalWidth > 0``;
  in Python: a PNG identical to ``figures/<name>.png``) and is not a single colour;
- every link and image source resolves (no broken links, nothing fetched from the network);
- the page reads in order: headline numbers, then figures, then tables.

``make test`` installs chromium when it is missing (see the Makefile).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from riskdask.registry import available_jobs, main_jobs
from riskdask import run_job
from riskdask.api import validate_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1200, 3000)

# Small but complete runs (the same kind of sizes as each job's own tests).
SMALL = {
    "selfcheck": ["n_samples=400000", "chunk_size=100000"],
    "credit": ["portfolio.synthetic_obligors=60", "simulation.n_scenarios=20000",
               "simulation.chunk_size=10000", "simulation.contribution_rows=2000"],
    "hazard": ["grid.k1.num=9", "grid.k2.num=9", "grid.tile_size=10", "split.n_splits=3",
               "bootstrap.n_boot=24", "bootstrap.chunk_size=5"],
    "coup": ["data.synthetic_countries=40", "forest.n_trees=12", "forest.trees_per_task=2",
             "forest.max_depth=12", "importance.permutation_rows=300",
             "importance.permutation_repeats=2", "backtest.first_test_year=2017",
             "backtest.n_trees=4", "backtest.trees_per_task=2"],
}
JOBS = sorted(main_jobs()) + [j for j in available_jobs() if j not in main_jobs()]

# Runs in the page once it has loaded: what the browser itself decoded and laid out.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth,
      height: i.naturalHeight, file: i.dataset.file || null, src: i.getAttribute('src')}));
  const order = [...document.querySelectorAll('h2, figure, table')].map(e =>
      e.tagName === 'H2' ? 'h2:' + e.textContent.trim() : e.tagName.toLowerCase());
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const pre = document.createElement('pre');
  pre.id = 'browser-probe';
  pre.textContent = JSON.stringify({imgs, order, links});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM, ("chromium is not installed: `make test` installs it "
                      "(apt-get install chromium), or install it yourself")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=JOBS)
def report_run(request, local_client, tmp_path_factory):
    job = request.param
    overrides = SMALL.get(job, [])
    validate_job(job, overrides=overrides)          # the small overrides are valid keys
    return run_job(job, overrides=overrides, client=local_client(2),
                   out=tmp_path_factory.mktemp(f"browser-{job}"))


@pytest.fixture(scope="module")
def probed(report_run, tmp_path_factory):
    """The report as Chromium sees it after load (images decoded, order, resolved links)."""
    work = tmp_path_factory.mktemp("probe")
    page = report_run.report.read_text(encoding="utf-8")
    # a copy with the probe; <base> keeps its relative links pointing into the run directory
    page = page.replace("<head>", f"<head><base href='{report_run.run_dir.as_uri()}/'>", 1)
    page = page.replace("</body>", PROBE + "</body>", 1)
    copy = work / "probe.html"
    copy.write_text(page, encoding="utf-8")
    proc = _chromium("--virtual-time-budget=10000", "--dump-dom", copy.as_uri(),
                     profile=work / "profile")
    match = re.search(r'<pre id="browser-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe output from chromium:\n{proc.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def _non_blank(img: Image.Image) -> tuple[int, float]:
    """(number of distinct colours, share of pixels that are not the background colour)."""
    a = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(np.uint32)
    codes = (a[:, 0] << 16) | (a[:, 1] << 8) | a[:, 2]       # one integer per colour
    _, counts = np.unique(codes, return_counts=True)
    return len(counts), 1.0 - counts.max() / counts.sum()


def test_screenshot_is_taken_and_not_blank(report_run, tmp_path):
    shot = tmp_path / "report.png"
    proc = _chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                     report_run.report.as_uri(), profile=tmp_path / "profile")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = Image.open(shot)
    assert img.size == WINDOW
    n_colours, ink = _non_blank(img)
    assert n_colours > 50 and ink > 0.01, (n_colours, ink)
    # the top of the page (title and headline numbers) has content, not just the figures
    top_colours, top_ink = _non_blank(img.crop((0, 0, WINDOW[0], 400)))
    assert top_colours > 5 and top_ink > 0.005


def test_every_figure_is_present_decoded_and_not_blank(report_run, probed):
    figures = report_run.manifest["outputs"]["figures"]
    assert figures, f"{report_run.job} wrote no figure"
    assert "figures/history.png" in figures      # the run history (riskdask.history) shows
    imgs = probed["imgs"]
    assert sorted(i["file"] for i in imgs if i["file"]) == sorted(figures)
    for img in imgs:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img["file"]
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64", img["file"]   # embedded: self-contained page
        raw = base64.b64decode(data)
        assert raw == (report_run.run_dir / img["file"]).read_bytes()
        decoded = Image.open(io.BytesIO(raw))
        assert decoded.size == (img["width"], img["height"])
        n_colours, ink = _non_blank(decoded)
        assert n_colours > 2 and ink > 0.005, (img["file"], n_colours, ink)


def test_no_broken_links(report_run, probed):
    assert probed["links"], "the report links its tables and manifest"
    for link in probed["links"]:
        url = urlparse(link)
        assert url.scheme == "file", f"report links outside the run: {link}"
        target = Path(unquote(url.path))
        assert target.exists(), f"broken link {link}"
        assert report_run.run_dir.resolve() in target.resolve().parents
    for img in probed["imgs"]:
        assert img["src"].startswith("data:"), img["src"][:80]


def test_reads_headline_then_figures_then_tables(report_run, probed):
    order = probed["order"]
    assert order[0] == "h2:Headline figures" and order[1] == "table"
    first_figure = order.index("figure")
    last_figure = len(order) - 1 - order[::-1].index("figure")
    assert order.index("h2:Figures") < first_figure
    assert all(o != "table" for o in order[2:first_figure])   # nothing else before the figures
    if report_run.tables():
        tables_at = order.index("h2:Tables")
        assert last_figure < tables_at and order[tables_at + 1] == "table"


# Runs once the performance report has had time to render: is BokehJS there, did it build
# the document, and how many canvases did it draw (inside Bokeh's shadow roots too)?
BOKEH_PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const acc = {canvas: 0};
  const walk = (root) => root.querySelectorAll('*').forEach(e => {
    if (e.tagName === 'CANVAS' && e.width > 0) acc.canvas++;
    if (e.shadowRoot) walk(e.shadowRoot);
  });
  walk(document);
  const bokeh = typeof Bokeh !== 'undefined';
  const pre = document.createElement('pre');
  pre.id = 'bokeh-probe';
  pre.textContent = JSON.stringify({bokeh, documents: bokeh ? Bokeh.documents.length : 0,
                                    canvas: acc.canvas,
                                    scripts: [...document.scripts].map(s => s.src)
                                                                  .filter(Boolean)});
  document.body.appendChild(pre);
}, 3000));
</script>"""


def test_the_performance_report_renders_offline(tmp_path):
    """``--profile``'s dask-performance.html has BokehJS inlined: with every network request
    refused, Chromium still builds the Bokeh document and draws the task stream."""
    import dask.config

    with dask.config.set({"distributed.worker.profile.cycle": "100ms"}):
        res = run_job("selfcheck", overrides=["n_samples=1000000", "chunk_size=250000",
                                              "jitter_ms=200"],
                      n_workers=1, out=tmp_path / "runs", profile=True)
    report = res.run_dir / "dask-performance.html"
    page = report.read_text(encoding="utf-8", errors="replace")
    copy = tmp_path / "perf.html"
    end = page.rindex("</body>")       # the last one: BokehJS itself holds the string
    copy.write_text(page[:end] + BOKEH_PROBE + page[end:], encoding="utf-8")
    proc = _chromium("--virtual-time-budget=20000", "--dump-dom",
                     "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                     copy.as_uri(), profile=tmp_path / "profile")
    match = re.search(r'<pre id="bokeh-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe output from chromium:\n{proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["scripts"] == [], f"the report loads scripts from the network: {seen['scripts']}"
    assert seen["bokeh"] and seen["documents"] >= 1, seen
    assert seen["canvas"] >= 1, seen
    mode = report.stat().st_mode & 0o777
    assert mode == (res.run_dir / "summary.json").stat().st_mode & 0o777


INDEX_PROBE = """<script>
window.addEventListener('load', () => {
  const jobs = [...document.querySelectorAll('h2')].map(e => e.textContent.trim());
  const rows = [...document.querySelectorAll('table.runs tr')].slice(1).map(tr =>
      [...tr.children].map(td => td.textContent.trim()));
  const links = [...document.querySelectorAll('table.runs a')].map(a => a.href);
  const warn = [...document.querySelectorAll('.warn')].map(e => e.textContent.trim());
  const pre = document.createElement('pre');
  pre.id = 'index-probe';
  pre.textContent = JSON.stringify({jobs, rows, links, warn});
  document.body.appendChild(pre);
});
</script>"""


def test_the_runs_index_lists_every_run_with_its_figures(local_client, tmp_path):
    """``<out>/index.html`` after three scheduled runs (the third with a new seed) and a run
    that was killed: a row per run, newest first, its figures with their errors, the config
    change marked, a link to each report that opens, and the killed attempt named."""
    out = tmp_path / "runs"
    sets = ["n_samples=200000", "chunk_size=100000"]
    runs = [run_job("selfcheck", overrides=sets, client=local_client(1), out=out),
            run_job("selfcheck", overrides=sets, client=local_client(1), out=out),
            run_job("selfcheck", overrides=[*sets, "seed=5"], client=local_client(1),
                    out=out)]
    (out / "selfcheck" / ".tmp-20990101T000000Z-0123456789-999999").mkdir()
    from riskdask.runs_index import write_index

    page = write_index(out).read_text(encoding="utf-8")
    end = page.rindex("</body>")
    copy = out / "probe-index.html"             # beside it: the relative links still work
    copy.write_text(page[:end] + INDEX_PROBE + page[end:], encoding="utf-8")
    proc = _chromium("--virtual-time-budget=5000", "--dump-dom", copy.as_uri(),
                     profile=tmp_path / "profile")
    match = re.search(r'<pre id="index-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-2000:]
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["jobs"] == ["selfcheck"]
    assert [r[0] for r in seen["rows"]] == [r.run_dir.name for r in reversed(runs)]
    assert [r[2] for r in seen["rows"]] == ["ok"] * 3
    assert seen["rows"][0][3].startswith("config") and seen["rows"][1][3] == "-"
    assert all("±" in r[4] for r in seen["rows"])              # the mean with its error
    assert len(seen["links"]) == 3
    for link in seen["links"]:
        assert Path(link.removeprefix("file://")).is_file(), link
    assert any("pid 999999" in w for w in seen["warn"])
