"""``tune report`` in a real browser: headless Chromium driven by chromedriver over the W3C WebDriver
HTTP API (plain ``requests``, no selenium).

What is asserted, on a report generated from the bundled sample and the bundled load-test record:

* the page opened from disk (``file://``) logs no console error and makes **no network request**
  (Resource Timing is empty, and a strict CSP would turn any attempt into a console error; a control
  page with one loopback image proves both checks catch a request);
* every plot ``<img>`` decoded (``naturalWidth > 0``) and is not blank (pixel variance on a canvas);
* the summary's recommended flags equal ``tune recommend -f json`` on the same input and options;
* every Markdown link resolves to a file that exists; same input + seed -> byte-identical data.json;
* screenshots (light and dark) are saved under ``test-artifacts/`` (gitignored).

Chromium missing is a FAILURE (``scripts/install-system.sh`` is tried first), never a skip.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from matplotlib.image import imread

from audit_tune.analysis.report.model import CapacityReport
from audit_tune.cli.app import main

REPO = Path(__file__).resolve().parents[1]
ART = REPO / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CURRENT = ("--audit-webhook-batch-buffer-size=200 --audit-webhook-batch-max-size=10 --audit-webhook-batch-throttle-qps=5 "
           "--audit-webhook-batch-throttle-burst=5 --audit-webhook-batch-max-wait=1s")
LOADTEST = REPO / "reports" / "sample" / "inputs" / "loadtest-run.json"
OPTS = ["--current-flags", CURRENT, "--seeds", "2", "--jobs", "1", "--seed", "3"]  # same objective for both commands

pytestmark = pytest.mark.timeout(600)


# ------------------------------------------------------------------------------------------------ fixtures
def _report(out: Path, name: str) -> int:
    return main(["report", *OPTS, "--loadtest", str(LOADTEST), "--reports-dir", str(out), "--name", name, "--no-progress"])


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    t0 = time.perf_counter()
    rc = _report(out, "a")
    sys.stderr.write(f"report generated in {time.perf_counter() - t0:.1f} s\n")
    assert rc == 3, "the sample's current flags drop events: report written, exit 3"
    rc2 = _report(out, "b")
    assert rc2 == 3
    return {"a": out / "a", "b": out / "b", "root": out}


@pytest.fixture(scope="module")
def recommend_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    p = tmp_path_factory.mktemp("rec") / "rec.json"
    rc = main(["recommend", *OPTS, "-f", "json", "-o", str(p), "--no-progress"])
    assert rc == 3
    return json.loads(p.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A chromedriver session over the W3C WebDriver HTTP API."""

    def __init__(self, profile: Path, dark: bool = False) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                if requests.get(f"{self.base}/status", timeout=1).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1100,1400"]
        if dark:
            args.append("--force-dark-mode")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}}}}
        r = requests.post(f"{self.base}/session", json=caps, timeout=120)
        assert r.ok, r.text
        self.sid = r.json()["value"]["sessionId"]

    def _url(self, path: str) -> str:
        return f"{self.base}/session/{self.sid}/{path}"

    def get(self, url: str) -> None:
        r = requests.post(self._url("url"), json={"url": url}, timeout=120)
        assert r.ok, r.text

    def js(self, script: str, *args: object) -> object:
        r = requests.post(self._url("execute/sync"), json={"script": script, "args": list(args)}, timeout=120)
        assert r.ok, r.text
        return r.json()["value"]

    def console(self) -> list[dict]:
        for path in ("se/log", "log"):
            r = requests.post(self._url(path), json={"type": "browser"}, timeout=30)
            if r.ok:
                return r.json()["value"]
        raise AssertionError(f"chromedriver gave no browser log: {r.status_code} {r.text[:200]}")

    def screenshot(self, path: Path) -> None:
        """The whole page: the window is first resized to the document's height."""
        h = int(self.js("return document.documentElement.scrollHeight"))
        requests.post(self._url("window/rect"), json={"width": 1100, "height": min(h + 100, 16000)}, timeout=60)
        r = requests.get(self._url("screenshot"), timeout=120)
        assert r.ok, r.text
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r.json()["value"]))

    def close(self) -> None:
        try:
            requests.delete(f"{self.base}/session/{self.sid}", timeout=30)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _need_chromium() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        subprocess.run(["bash", str(REPO / "scripts" / "install-system.sh")], capture_output=True, timeout=1800)
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing after scripts/install-system.sh: the report's browser tests cannot run")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    _need_chromium()
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


IMAGES_JS = """
return [...document.images].map(im => {
  const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
  let variance = -1, err = null;
  try {
    const x = c.getContext('2d'); x.drawImage(im, 0, 0);
    const d = x.getImageData(0, 0, c.width, c.height).data;
    let n = 0, s = 0, s2 = 0;
    for (let i = 0; i < d.length; i += 4 * 5) { const v = (d[i] + d[i+1] + d[i+2]) / 3; n++; s += v; s2 += v * v; }
    const m = s / n; variance = s2 / n - m * m;
  } catch (e) { err = String(e); }
  return {plot: im.dataset.plot || null, complete: im.complete, w: im.naturalWidth, h: im.naturalHeight,
          variance: variance, err: err, src: im.currentSrc.slice(0, 22)};
});
"""
RESOURCES_JS = "return performance.getEntriesByType('resource').map(e => e.name);"


def _severe(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e.get("level") == "SEVERE"]


# ------------------------------------------------------------------------------------------------ tests
def test_files_written(reports: dict[str, Path]) -> None:
    a = reports["a"]
    for f in ("index.html", "report.md", "data.json"):
        assert (a / f).is_file()
    html = (a / "index.html").read_text()
    assert "http://" not in html and "https://" not in html, "the page must not reference any URL"
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_data_json_byte_identical(reports: dict[str, Path]) -> None:
    a, b = (reports["a"] / "data.json").read_bytes(), (reports["b"] / "data.json").read_bytes()
    assert a == b.replace(b'"name": "b"', b'"name": "a"'), "same input and seed must give the same data.json"
    for png in sorted(reports["a"].glob("*.png")):
        assert png.read_bytes() == (reports["b"] / png.name).read_bytes(), f"{png.name} differs between runs"


def test_same_numbers_with_a_process_pool(reports: dict[str, Path]) -> None:
    """--jobs 2 (plot runs over a process pool) gives the numbers --jobs 1 gave."""
    out = reports["root"]
    opts = [("2" if prev == "--jobs" else x) for prev, x in zip([None, *OPTS], OPTS)]
    assert "--jobs" in opts and opts[opts.index("--jobs") + 1] == "2"
    rc = main(["report", *opts, "--loadtest", str(LOADTEST), "--reports-dir", str(out), "--name", "c", "--no-progress"])
    assert rc == 3
    one, two = (json.loads((out / n / "data.json").read_text()) for n in ("a", "c"))
    for d in (one, two):
        d["name"] = "x"
        d["config"]["objective"].pop("jobs")
        d["recommendation"]["config"]["objective"].pop("jobs")
    assert one == two


def test_markdown_links_resolve(reports: dict[str, Path]) -> None:
    md = (reports["a"] / "report.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", md)
    assert len([x for x in links if x.endswith(".png")]) >= 7, links
    for target in links:
        assert not re.match(r"^[a-z]+:", target), f"report.md links outside the folder: {target}"
        assert (reports["a"] / target).is_file(), f"report.md links {target}, which does not exist"


def test_page_in_browser(reports: dict[str, Path], browser: Browser, recommend_json: dict) -> None:
    page = (reports["a"] / "index.html").resolve()
    browser.get(page.as_uri())
    assert browser.js("return document.readyState") == "complete"
    assert browser.js(RESOURCES_JS) == [], "the report made network requests"
    imgs = browser.js(IMAGES_JS)
    assert len(imgs) >= 7, imgs
    for im in imgs:
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, f"plot {im['plot']} did not decode: {im}"
        assert im["err"] is None, f"plot {im['plot']}: canvas read failed: {im['err']}"
        assert im["variance"] > 50, f"plot {im['plot']} looks blank (pixel variance {im['variance']:.1f})"
        assert im["src"].startswith("data:image/png"), im
    assert {i["plot"] for i in imgs} >= {"history", "knee", "peak-window", "latency-cdf", "inflight-memory",
                                        "sensitivity", "loadtest"}
    shown = browser.js("return document.getElementById('recommended-flags').textContent").strip().splitlines()
    assert shown == recommend_json["recommended"]["flags"], "summary flags differ from tune recommend -f json"
    assert browser.js("return document.getElementById('verdict').dataset.verdict") == "change"
    text = browser.js("return document.body.innerText")
    for needle in ("Binding constraint", "Calibration error", "Load test: observed vs predicted",
                   "Effective configuration", "seed 3"):
        assert needle in text, needle
    browser.screenshot(ART / "report-light.png")
    errors = _severe(browser.console())
    assert not errors, f"console errors: {errors}"


def test_dark_theme(reports: dict[str, Path], tmp_path: Path) -> None:
    _need_chromium()
    b = Browser(tmp_path / "profile", dark=True)
    try:
        b.get((reports["a"] / "index.html").resolve().as_uri())
        dark = b.js("return matchMedia('(prefers-color-scheme: dark)').matches")
        bg = b.js("return getComputedStyle(document.body).backgroundColor")
        imgs = b.js(IMAGES_JS)
        dark_shown = b.js("return [...document.images].map(i => i.currentSrc !== i.src)")
        b.screenshot(ART / "report-dark.png")
        assert not _severe(b.console())
    finally:
        b.close()
    if dark:  # this Chromium honours --force-dark-mode for the media query: the dark variant must be shown
        assert bg == "rgb(22, 25, 29)", bg
        html = (reports["a"] / "index.html").read_text()
        assert html.count('media="(prefers-color-scheme: dark)"') == len(imgs)
        assert all(dark_shown), "the dark PNG variants must be the ones displayed in dark mode"
    for im in imgs:
        assert im["w"] > 0 and im["variance"] > 50, im


def test_network_check_catches_a_request(tmp_path: Path, browser: Browser) -> None:
    """Control: a page with one loopback image is caught by Resource Timing and by the CSP."""
    port = _free_port()
    csp = (REPO / "analysis" / "report" / "html.py").read_text()
    assert "default-src 'none'" in csp
    from audit_tune.analysis.report.html import CSP

    p = tmp_path / "leak.html"
    p.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head>'
                 f'<body><img src="http://127.0.0.1:{port}/x.png"></body></html>')
    browser.get(p.as_uri())
    time.sleep(0.3)
    logs = browser.console()
    assert any("Content Security Policy" in e.get("message", "") for e in _severe(logs)), logs
    q = tmp_path / "leak-nocsp.html"
    q.write_text(f'<!DOCTYPE html><html><body><img src="http://127.0.0.1:{port}/y.png"></body></html>')
    browser.get(q.as_uri())
    time.sleep(0.3)
    assert any(f"127.0.0.1:{port}" in n for n in browser.js(RESOURCES_JS))
    browser.console()  # drain


def test_defaults_match_recommend(tmp_path: Path) -> None:
    """No input given: both commands read the bundled sample and the flags it was recorded with."""
    rc = main(["report", "--seeds", "2", "--jobs", "1", "--reports-dir", str(tmp_path), "--no-progress"])
    assert rc == 3
    d = json.loads((tmp_path / "sample" / "data.json").read_text())
    assert main(["recommend", "--seeds", "2", "--jobs", "1", "-f", "json", "-o", str(tmp_path / "r.json"),
                 "--no-progress"]) == 3
    r = json.loads((tmp_path / "r.json").read_text())
    assert d["summary"]["recommended_flags"] == r["recommended"]["flags"]
    assert d["config"]["current_flags_source"] == r["config"]["current_flags_source"]
    assert d["flag_sets"]["current"] == r["config"]["current_flags"]


def test_cli_errors(tmp_path: Path) -> None:
    assert main(["report", "--loadtest", str(tmp_path / "nope.json"), "--reports-dir", str(tmp_path)]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    assert main(["report", "--loadtest", str(bad), "--reports-dir", str(tmp_path), "--seeds", "1"]) == 1
    assert main(["report", "--name", "../escape", "--reports-dir", str(tmp_path)]) == 1


def test_committed_sample_is_complete() -> None:
    s = REPO / "reports" / "sample"
    for f in ("index.html", "report.md", "data.json"):
        assert (s / f).is_file(), f"reports/sample/{f} missing: run scripts/make-sample-report.sh"
    d = json.loads((s / "data.json").read_text())
    assert d["format"] == "audit-tune-report/v1" and d["config"]["seed"] == 1
    for target in re.findall(r"\]\(([^)\s]+)\)", (s / "report.md").read_text()):
        assert (s / target).is_file(), target
    assert shutil.which("bash")


def test_frontier_plot_when_nothing_survives_within_the_budget(tmp_path: Path) -> None:
    """A 2 min outage with a 3 MiB budget: no flag set both survives and fits, so the report plots the
    frontier (tolerance against apiserver memory, and what a longer outage loses) from ``failures.frontier``."""
    rc = main(["report", "--memory-budget", "3MiB", "--memory-overhead", "1", "--tolerate-outage", "2m:refuse",
               "--seeds", "1", "--jobs", "1",
               "--reports-dir", str(tmp_path), "--name", "fr", "--no-progress"])
    assert rc == 3
    out = tmp_path / "fr"
    d = json.loads((out / "data.json").read_text())
    f = d["recommendation"]["failures"]
    assert f["survivor"] is None and f["frontier"]
    points = CapacityReport.from_doc(d).frontier
    assert [p.to_dict() for p in points] == f["frontier"]
    assert all(p.lost > 0 or p.peak_apiserver_memory_bytes > 3 * 2**20 for p in points)
    png = imread(out / "frontier.png")
    assert png.shape[0] > 200 and png.shape[1] > 400 and float(png[..., :3].std()) > 0.05, "blank frontier plot"
    assert "](frontier.png)" in (out / "report.md").read_text()
    html = (out / "index.html").read_text()
    assert 'data-plot="frontier"' in html and "tolerance against memory" in html


def test_no_frontier_plot_with_a_survivor(reports: dict[str, Path]) -> None:
    d = json.loads((reports["a"] / "data.json").read_text())
    assert d["recommendation"]["failures"]["survivor"] is not None and not d["recommendation"]["failures"]["frontier"]
    assert not (reports["a"] / "frontier.png").exists()
