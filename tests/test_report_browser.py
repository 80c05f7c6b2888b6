"""report.html and the comparison page of ``vaekit report`` in a real headless browser, from real runs.

Two short ``vaekit train`` runs on the embedded digits (the real command, in a subprocess), then
``vaekit figures`` on one and ``vaekit report`` on both. Each page is opened in Debian's chromium,
driven by selenium through chromedriver (no browser is downloaded): it must log nothing to the
console, every ``<img>`` must have loaded, a screenshot must not be blank, and every summary number
shown must be the one in the run's evaluation JSON.

Where chromium, chromedriver or selenium is missing the tests skip, except under CI (``CI=true``),
where they fail: .ci/run installs ``chromium`` and ``chromium-driver``, and the ``test`` extra selenium.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
TRAIN = ("train", "--data", "digits", "--epochs", "2", "--hidden", "16", "--importance-samples", "8", "--no-progress")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI the browser tests must run (.ci/run installs chromium and chromium-driver)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        _unavailable("no chromium or chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory() as profile, pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")                      # selenium fetches no driver or browser
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium)
        for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1000"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        session = webdriver.Chrome(service=Service(str(driver)), options=options)
        try:
            yield session
        finally:
            session.quit()


def _vaekit(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser")
    for name, k in (("k2", "2"), ("k3", "3")):
        _vaekit(*TRAIN, "--latent-dim", k, "--out", name, cwd=root)
    trained = (root / "k2" / "report.html").read_text("utf-8")
    _vaekit("figures", "k2", "--limit", "64", cwd=root)        # redraws the figures and rewrites the report
    _vaekit("report", "k2", "k3", "--out", "both.html", cwd=root)
    return {"root": root, "trained_report": trained}


def _evaluation(run: Path) -> dict[str, Any]:
    return json.loads((run / "evaluation-test.json").read_text())


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _open(browser: Any, page: Path) -> dict[str, Any]:
    """Load ``page``; what the browser saw: console messages, images, screenshot, numbers, widths."""
    browser.get_log("browser")                                # forget what earlier pages logged
    browser.get(page.resolve().as_uri())
    seen = browser.execute_script("""
        return {
          images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
          numbers: [...document.querySelectorAll('[data-value]')].map(e => ({
              run: e.dataset.run || null, key: e.dataset.key, value: e.dataset.value, text: e.innerText,
              summary: e.closest('dl.summary, table.compare') !== null})),
          scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
        };""")
    seen["console"] = browser.get_log("browser")
    with Image.open(io.BytesIO(browser.get_screenshot_as_png())) as im:
        seen["pixels"] = np.asarray(im.convert("L"), dtype=np.float64)
    return seen


def _check_rendering(seen: dict[str, Any], n_images: int) -> None:
    assert seen["console"] == []                              # no error, no warning, no CSP violation
    assert len(seen["images"]) == n_images
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["pixels"].std() > 20, "the screenshot is blank"
    assert seen["scrollWidth"] <= seen["innerWidth"]          # nothing wider than the window (long lines wrap)


def test_run_report_in_a_browser(browser: Any, runs: dict[str, Any]) -> None:
    run = runs["root"] / "k3"
    seen = _open(browser, run / "report.html")
    captions = json.loads((run / "figures" / "captions.json").read_text())
    _check_rendering(seen, len(captions))
    doc = _evaluation(run)
    summary = {n["key"]: n for n in seen["numbers"] if n["summary"]}
    assert set(summary) == {"log_likelihood", "log_likelihood_se", "elbo", "posterior_gap", "bits_per_dim",
                            "active_units", "latent_dim"}
    for key, number in summary.items():
        assert json.loads(number["value"]) == doc[key]
        assert number["text"] == _shown(doc[key])
    info = json.loads((run / "run.json").read_text())
    assert info["sessions"][0]["command"] == ["vaekit", *TRAIN, "--latent-dim", "3", "--out", "k3"]
    assert info["sessions"][0]["duration_s"] > 0 and sum(info["splits"].values()) == 1797   # every digit


def test_figures_keeps_the_summary_and_the_best_epoch(browser: Any, runs: dict[str, Any]) -> None:
    run = runs["root"] / "k2"
    redrawn = (run / "report.html").read_text("utf-8")
    trained = runs["trained_report"]
    for text in (trained, redrawn):
        assert "best epoch</th>" in text and 'data-key="best_epoch"' in text and '<tr class="best">' in text
    start = trained.index("<h2>Summary</h2>")
    assert redrawn[start:redrawn.index("<h2>Run</h2>")] == trained[start:trained.index("<h2>Run</h2>")]
    _check_rendering(_open(browser, run / "report.html"), 5)


def test_comparison_page_in_a_browser(browser: Any, runs: dict[str, Any]) -> None:
    root = runs["root"]
    seen = _open(browser, root / "both.html")
    _check_rendering(seen, 5 + 5 + 1)                         # each run's figures and the validation-ELBO plot
    numbers = [n for n in seen["numbers"] if n["summary"]]
    assert {n["run"] for n in numbers} == {"k2", "k3"}
    for n in numbers:
        doc = _evaluation(root / n["run"])
        assert json.loads(n["value"]) == doc[n["key"]]
        assert n["text"] == _shown(doc[n["key"]])
    assert len(numbers) == 2 * 7
