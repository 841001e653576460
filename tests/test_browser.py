"""The trace inspector as a person uses it, in a real browser (headless Chromium driven by selenium): the
failures page renders with its first error red and its Re-Tuning trees nested, and in JupyterLab, Run All on
10_trace_inspector.ipynb shows the shipped traces in a widget whose task and problem controls change the tree.

Skipped with a reason when Chromium, chromedriver, selenium or JupyterLab is missing (`.ci/run` installs them).
Screenshots go to tests/screenshots/ (git-ignored): look at them to see what a person sees."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from retune.evaluation import traces
from retune.analysis.inspector import RED, export_failures
from retune.config.profiles import load_profile
from retune.tasks import TASKS

from _planted import planted_runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1800"]

if not (CHROMIUM and DRIVER):
    pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def rgb(hex_colour: str) -> str:
    return "rgba({}, {}, {}, 1)".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A smoke profile whose results hold a shipped traces file (planted failures on its own problems)."""
    root = tmp_path_factory.mktemp("lab")
    dirs = {"paths": {k: str(root / f"{k}_dir") for k in ("data", "runs", "results", "figures")}}
    profile = load_profile("smoke", dirs)
    groups = planted_runs(profile)
    traces.write_traces(profile, groups)
    return profile, root, [t for _, _, traces in groups for t in traces]


def screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / name
    driver.save_screenshot(str(path))
    return path


def test_failures_page_shows_the_first_error_red_and_nested_retuning_trees(browser, shipped, tmp_path):
    _, _, traces = shipped
    page = export_failures(traces, tmp_path / "failing_traces.html", per_group=2)
    browser.get(page.as_uri())
    trees = browser.find_elements(By.CSS_SELECTOR, ".retune-trace")
    assert len(trees) == 3 * 3 * 2
    first = browser.find_element(By.XPATH, "//span[contains(., '(first error)')]/following-sibling::pre[1]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
    assert first.is_displayed() and first.value_of_css_property("color") == rgb(RED)
    oracle = first.find_element(By.XPATH, "following-sibling::pre[1]")
    assert oracle.is_displayed() and oracle.value_of_css_property("color") == rgb("#2e7d32")
    for task in TASKS:  # each task's Re-Tuning failures: a context inside a context
        nested = browser.find_elements(
            By.XPATH, f"//div[@class='retune-trace'][contains(div, '{task}') and contains(div, 'retuning')]"
                      "//details[@open]//details[@open]/summary[contains(., 'depth 1')]")
        assert nested and nested[0].is_displayed(), task
    screenshot(browser, "failing_traces.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(shipped):
    """JupyterLab on a free local port, serving a copy of 10_trace_inspector.ipynb whose parameters name the
    smoke profile and its directories; shut down by its PID."""
    pytest.importorskip("jupyterlab", reason="needs JupyterLab (pip install -e '.[lab]')")
    profile, root, _ = shipped
    nb = nbformat.read(ROOT / "notebooks" / "10_trace_inspector.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f"profile = {profile.profile!r}\nsettings = {profile.to_dict()!r}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "inspector.ipynb")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
               "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                assert server.poll() is None, (root / "jupyterlab.log").read_text()
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def trace_header(driver) -> str:
    """The shown trace's header line; read again when the widget re-renders under the read (a stale element)."""
    for _ in range(20):
        try:
            heads = driver.find_elements(By.CSS_SELECTOR, ".widget-html .retune-trace > div")
            return heads[0].text if heads else ""
        except StaleElementReferenceException:
            time.sleep(0.1)
    return ""


def dropdown(driver, name: str) -> Select:
    return Select(driver.find_element(
        By.XPATH, f"//div[contains(@class, 'widget-dropdown')][label[normalize-space()='{name}']]//select"))


def test_jupyterlab_run_all_shows_the_traces_and_the_controls_change_the_tree(browser, lab, shipped):
    browser.get(f"{lab}/lab/tree/inspector.ipynb")
    wait = WebDriverWait(browser, 60, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException])
    wait.until(lambda d: d.execute_script(
        "const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle');"))
    started = time.monotonic()
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait.until(lambda d: trace_header(d))
    assert time.monotonic() - started < 60
    # one output: the live widget, not a static copy beside it
    assert not browser.find_elements(By.XPATH, "//*[contains(text(), 'Static view of')]")
    assert trace_header(browser).startswith("addition \u00b7 retuning") and "\u2717" in trace_header(browser)
    screenshot(browser, "inspector_first.png")

    task = dropdown(browser, "task")
    task.select_by_visible_text("parity")
    wait.until(lambda d: trace_header(d).startswith("parity \u00b7 retuning"))  # Re-Tuning first
    assert browser.find_elements(By.XPATH, "//div[contains(@class, 'widget-html-content')]"
                                           "//details[@open]//details[@open]/summary[contains(., 'depth 1')]")
    chosen = trace_header(browser)
    problem = dropdown(browser, "problem")
    failed = len(problem.options)
    browser.find_element(By.XPATH, "//div[contains(@class, 'widget-checkbox')]//input").click()  # untick
    wait.until(lambda d: len(dropdown(d, "problem").options) > failed)
    assert trace_header(browser) == chosen  # the selection follows the problem, not its position in the list
    problem = dropdown(browser, "problem")
    problem.select_by_index(len(problem.options) - 1 - problem.options.index(problem.first_selected_option))
    wait.until(lambda d: trace_header(d) != chosen)
    assert trace_header(browser).startswith("parity")
    size = dropdown(browser, "size")
    size.select_by_index(len(size.options) - 1)
    wait.until(lambda d: f"size {size.options[-1].text}" in trace_header(d))
    screenshot(browser, "inspector_parity.png")
    assert not browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type*='error']")
