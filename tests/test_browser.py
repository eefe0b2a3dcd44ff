"""The explorers in a real browser, as a learner uses them: JupyterLab + headless Chromium.

Each test starts its own JupyterLab server on 127.0.0.1 (a free port, a random token, settings and
runtime files in a temporary folder, a kernel of this Python, EQUIMOD_FAST=1 unless
EQUIMOD_BROWSER_MODE=full), opens a copy of a notebook in Debian's Chromium driven by Playwright,
runs all cells from the menu, waits for the widgets, moves sliders with the mouse and checks that
the numbers and the figure shown change. It saves screenshots before and after each move (in
runs/test-artifacts/browser/, or in $EQUIMOD_TEST_ARTIFACTS) and stops the server by its process id,
then checks that no kernel is left.

Needs the `chromium` executable (Debian/Ubuntu: `sudo apt-get install chromium`; `make test` installs
it when run as root) and the Python package `playwright` (in the test extra). Playwright's own browser
download is never used. Without them the tests are skipped with that message, except where
EQUIMOD_REQUIRE_BROWSER=1 or CI=true (`.ci/run` sets the first): there a missing browser fails.
"""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import free_port, write_kernel_of_this_python

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = os.environ.get("EQUIMOD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-dev-shm-usage"]   # containers often give /dev/shm only 64 MB
REQUIRED = (os.environ.get("EQUIMOD_REQUIRE_BROWSER") == "1"
            or os.environ.get("CI", "").lower() in ("1", "true", "yes"))
ARTIFACTS = Path(os.environ.get("EQUIMOD_TEST_ARTIFACTS", REPO / "runs" / "test-artifacts")) / "browser"
# EQUIMOD_BROWSER_MODE=full runs the notebooks as a learner gets them (minutes, not seconds): the
# screenshots in notebooks/figures/ were taken that way.
FULL_MODE = os.environ.get("EQUIMOD_BROWSER_MODE") == "full"
# Hang guards, not speed targets (speed lives in benchmarks/):
RUN_ALL_TIMEOUT_S = 1800 if FULL_MODE else 600   # "Run All Cells"
UPDATE_TIMEOUT_S = 60                            # one slider move: compute + redraw + the page round trip

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(RUN_ALL_TIMEOUT_S + 900)]


def _missing() -> list[str]:
    problems = []
    if not CHROMIUM or not os.access(CHROMIUM, os.X_OK):
        problems.append("no Chromium executable (Debian/Ubuntu: `sudo apt-get install chromium`, or set "
                        "EQUIMOD_CHROMIUM=/path/to/chrome)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("no Python package playwright (`pip install -e \".[test]\"`; no browser download needed)")
    return problems


@pytest.fixture(scope="module")
def playwright_browser():
    problems = _missing()
    if problems:
        message = "browser test: " + "; ".join(problems)
        if REQUIRED:
            pytest.fail(message + " (required here: EQUIMOD_REQUIRE_BROWSER=1 or CI=true)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        except Exception as error:   # e.g. a wrapper script that is not the browser (Ubuntu's snap stub)
            message = f"browser test: {CHROMIUM} did not start as Chromium: {str(error).splitlines()[0]}"
            if REQUIRED:
                pytest.fail(message)
            pytest.skip(message)
        yield browser
        browser.close()


# ---------------------------------------------------------------- a JupyterLab server of our own
def _write_settings(root: Path) -> dict:
    """Environment for a JupyterLab isolated in `root`: its own kernel spec, settings, runtime files."""
    write_kernel_of_this_python(root)
    settings = root / "lab-settings"
    for plugin, values in {
        # every cell stays in the page (JupyterLab 4 otherwise leaves off-screen cells out of the DOM)
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        # no "news?" toast over the page, no update check (the machine has no network)
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return {**os.environ, "JUPYTER_PATH": str(root / "jupyter"), "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"), "EQUIMOD_FAST": "0" if FULL_MODE else "1"}


def _processes_mentioning(text: str) -> list[int]:
    """Process ids whose command line contains `text` (kernels name their connection file in it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@contextmanager
def jupyterlab(tmp_path: Path, notebook: str):
    """Start `jupyter lab` on a copy of the notebook in tmp_path/work; yield (base URL, token); stop it by its pid.

    The browser saves into the copy, never into the repository; settings, kernel spec, runtime files
    and the server's log live in tmp_path/server.
    """
    work, private = tmp_path / "work", tmp_path / "server"
    work.mkdir()
    private.mkdir()
    shutil.copy(NOTEBOOKS / notebook, work / notebook)
    port, token = free_port(), secrets.token_hex(16)
    env = _write_settings(private)
    log_path = private / "jupyterlab.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        + (["--allow-root"] if os.geteuid() == 0 else []),   # CI machines run as root
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n"
                                   f"{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not answer within 120 s")
            time.sleep(0.5)
        yield url, token
    finally:
        server.send_signal(signal.SIGTERM)   # our server, by its pid: it shuts its kernels down
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        runtime = env["JUPYTER_RUNTIME_DIR"]
        deadline = time.monotonic() + 20
        while _processes_mentioning(runtime) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _processes_mentioning(runtime)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"kernels {left} outlived the JupyterLab server"


# ---------------------------------------------------------------- driving the page
def open_and_run_all(browser, url: str, token: str, notebook: str, shots: Path):
    """Open the notebook, Run > Run All Cells, wait until every code cell has run; return the page."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{notebook}?token={token}")
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
    wait_for_idle_kernel(page, 180)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator("li[data-command='runmenu:run-all']").click()   # Run > Run All Cells
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while True:
        texts = [t.strip() for t in prompts.all_inner_texts()]
        if texts and all(re.fullmatch(r"\[\d+\]:", t) for t in texts):
            break
        if time.monotonic() > deadline:
            page.screenshot(path=shots / "timeout.png", full_page=True)
            pytest.fail(f"{notebook}: cells still waiting after {RUN_ALL_TIMEOUT_S} s: {texts}")
        time.sleep(1)
    wait_for_idle_kernel(page, 120)   # the last cell's widget messages are handled by now
    outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    if "Traceback" in outputs:
        page.screenshot(path=shots / "error.png", full_page=True)
        pytest.fail(f"{notebook} raised in the browser:\n{outputs[outputs.index('Traceback') - 200:][:3000]}")
    return page


def wait_for_idle_kernel(page, seconds: float) -> None:
    """Wait until the status bar reads "<kernel> | Idle".

    Accept a "Select Kernel" dialog on the way (a learner would take the notebook's own kernel, as it offers).
    """
    idle = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$"))
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    deadline = time.monotonic() + seconds
    while not idle.count():
        if dialog.count():
            dialog.locator(".jp-mod-accept").click()
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel was not idle within {seconds} s")
        time.sleep(0.5)


def wait_for_identity(explorer) -> tuple[str, bytes]:
    """The notebooks leave their explorer reset to identity: wait until the page shows that state.

    That is no jitter, flip or grayscale in the view line, and the figure holds still; return both.
    """
    readout = explorer.locator(".equimod-readout .equimod-params")
    deadline = time.monotonic() + UPDATE_TIMEOUT_S
    previous = None
    while time.monotonic() < deadline:
        view, png = readout.inner_text(timeout=5_000), figure_png(explorer)
        if view.strip() == "view: crop 1.00x1.00 @(0.00,0.00)" and png == previous:
            return explorer.locator(".equimod-readout").inner_text(), png
        previous = png
        time.sleep(0.5)
    pytest.fail(f"the explorer did not settle at identity within {UPDATE_TIMEOUT_S} s: {readout.inner_text()}")


@contextmanager
def explorer_in_jupyterlab(browser, tmp_path: Path, notebook: str, shots: Path):
    """Serve the notebook and run all its cells in the browser; yield (page, the explorer's element).

    On any failure inside the block, a screenshot of the whole page goes to shots/failure.png and the
    text of the explorer's output area (where a callback's traceback would show) joins the error.
    """
    with jupyterlab(tmp_path, notebook) as (url, token):
        page = open_and_run_all(browser, url, token, notebook, shots)
        try:
            explorer = page.locator(".equimod-explorer")
            explorer.first.wait_for(timeout=30_000)
            assert explorer.count() == 1, f"{notebook} should show one explorer, the page has {explorer.count()}"
            explorer.scroll_into_view_if_needed()
            yield page, explorer
        except (Exception, pytest.fail.Exception) as error:
            page.screenshot(path=shots / "failure.png", full_page=True)
            shown = page.locator(".equimod-explorer .equimod-figure").all_inner_texts()
            raise AssertionError(f"{error}\n(explorer output area: {shown}; page: {shots / 'failure.png'})") from error
        finally:
            page.close()


def figure_png(explorer) -> bytes:
    """The explorer's current figure, decoded from the <img> the Output widget shows."""
    src = explorer.locator(".equimod-figure img").last.get_attribute("src", timeout=10_000)
    assert src and src.startswith("data:image/png;base64,"), src
    return base64.b64decode(src.split(",", 1)[1])


def drag_slider(page, explorer, control: str, fraction: float) -> None:
    """Press the slider's handle, move it `fraction` of the track's width (+ right), release."""
    track = explorer.locator(f".equimod-control-{control} .noUi-target").first
    handle = explorer.locator(f".equimod-control-{control} .noUi-handle").first
    width = track.bounding_box()["width"]
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + fraction * width, y, steps=8)
    page.mouse.up()


def wait_for_change(explorer, before_text: str, before_png: bytes) -> tuple[str, bytes]:
    """Poll until the readout and the figure both differ from before; return the new ones."""
    readout = explorer.locator(".equimod-readout")
    deadline = time.monotonic() + UPDATE_TIMEOUT_S
    while time.monotonic() < deadline:
        text, png = readout.inner_text(timeout=5_000), figure_png(explorer)
        if text != before_text and png != before_png:
            return text, png
        time.sleep(0.2)
    pytest.fail(f"the explorer did not update within {UPDATE_TIMEOUT_S} s of the move:\n{readout.inner_text()}")


def slider_value(explorer, control: str) -> float:
    return float(explorer.locator(f".equimod-control-{control} .widget-readout").inner_text())


def table(readout_text: str) -> dict:
    """{model: [cos(y, y_hat), cos(y, y_o), gain]} from the readout table's text."""
    rows = {}
    for line in readout_text.splitlines():
        cells = line.split("\t")
        if len(cells) >= 4 and re.fullmatch(r"[-+]?\d\.\d{3}", cells[1].strip()):
            rows[cells[0].strip()] = [float(c) for c in cells[1:4]]
    return rows


@pytest.fixture
def shots(request):
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder
    print(f"screenshots: {folder}")


def training_mark(page, explorer, control: str) -> str:
    """The "trained: ..." mark shown next to a control (in the same row box)."""
    row = explorer.locator(".widget-hbox", has=page.locator(f".equimod-control-{control}")).last
    return row.locator(".equimod-trained").inner_text().strip()


# ---------------------------------------------------------------- the tests
#: Notebook 5's panels: the same post-hoc predictor on both models (h), and EquiMod's own module (y).
PANELS = {"SimCLR + post-hoc (h)", "EquiMod + post-hoc (h)", "EquiMod's own module (y)"}
OWN = "EquiMod's own module (y)"


def test_displacement_explorer_follows_the_hue_slider_in_jupyterlab(playwright_browser, tmp_path, shots):
    tic = time.perf_counter()
    with explorer_in_jupyterlab(playwright_browser, tmp_path, "05_displacement_explorer.ipynb",
                                shots) as (page, explorer):
        before_text, before_png = wait_for_identity(explorer)
        before = table(before_text)
        assert set(before) == PANELS, before_text
        assert all(numbers[1] == pytest.approx(1.0, abs=1e-3) for numbers in before.values()), \
            f"at identity the view is the original, so cos(y, y_o) = 1:\n{before_text}"
        assert slider_value(explorer, "hue") == 0.0
        # every control but the image shows what training drew; the readout says the spaces differ
        assert explorer.locator(".equimod-trained").count() == 11      # the synthetic config: no blur, no solarize
        assert training_mark(page, explorer, "hue") == "trained: all hues"       # +-0.5 turn
        assert training_mark(page, explorer, "brightness") == "trained: 0.60–1.40"
        assert training_mark(page, explorer, "grayscale") == "trained: p 0.20"
        assert "different spaces" in explorer.locator(".equimod-readout .equimod-spaces").inner_text()
        assert explorer.locator(".equimod-readout .equimod-outside").count() == 0
        explorer.screenshot(path=shots / "before.png")

        drag_slider(page, explorer, "hue", 0.2)   # a fifth of the track: about +0.2 turn
        after_text, after_png = wait_for_change(explorer, before_text, before_png)
        explorer.screenshot(path=shots / "after.png")
        page.screenshot(path=shots / "page.png", full_page=True)

        hue = slider_value(explorer, "hue")
        assert 0.05 < hue <= 0.5, f"the drag should have moved the hue slider right, it reads {hue}"
        assert f"h{hue:+.2f}" in after_text, after_text
        after = table(after_text)
        assert set(after) == set(before)
        for name, (cos_pred, cos_invariant, gain) in after.items():
            assert cos_invariant < 0.999, f"{name}: a hue shift of {hue} should move the embedding:\n{after_text}"
            assert gain == pytest.approx(cos_pred - cos_invariant, abs=2e-3)
        assert after[OWN] != before[OWN]
        assert explorer.locator(".equimod-readout .equimod-outside").count() == 0   # +-0.5 turn: all trained

        # the reset button, then a case the linear module models: grayscale
        explorer.get_by_role("button", name="reset to identity").click()
        reset_text, reset_png = wait_for_identity(explorer)
        assert table(reset_text) == before, reset_text     # identity again: the same numbers as at the start
        explorer.locator(".equimod-control-grayscale input[type=checkbox]").click()
        gray_text, _ = wait_for_change(explorer, reset_text, reset_png)
        explorer.screenshot(path=shots / "grayscale.png")
        assert "gray" in gray_text.splitlines()[0] and "jitter" not in gray_text.splitlines()[0], gray_text
        gray = table(gray_text)
        assert set(gray) == PANELS and all(gray[name] != before[name] for name in PANELS), gray_text
    print(f"wall time {time.perf_counter() - tic:.0f} s")


def test_augmentation_sliders_change_the_shown_view_in_jupyterlab(playwright_browser, tmp_path, shots):
    tic = time.perf_counter()
    with explorer_in_jupyterlab(playwright_browser, tmp_path, "01_augmentations_are_parameters.ipynb",
                                shots) as (page, explorer):
        text, png = wait_for_identity(explorer)
        explorer.screenshot(path=shots / "0-identity.png")

        drag_slider(page, explorer, "hue", 0.25)
        text, png = wait_for_change(explorer, text, png)
        hue = slider_value(explorer, "hue")
        assert hue > 0.05 and f"h{hue:+.2f}" in text, text
        explorer.screenshot(path=shots / "1-hue.png")

        drag_slider(page, explorer, "crop_scale", -0.5)   # the handle starts at 1 (the right end)
        text, png = wait_for_change(explorer, text, png)
        scale = slider_value(explorer, "crop_scale")
        assert scale < 0.9, f"crop scale reads {scale}"
        height, width = map(float, re.search(r"crop (\d\.\d\d)x(\d\.\d\d)", text).groups())
        assert height * width == pytest.approx(scale, abs=0.03), text
        explorer.screenshot(path=shots / "2-crop.png")

        explorer.locator(".equimod-control-flip input[type=checkbox]").click()
        text, png = wait_for_change(explorer, text, png)
        assert "flip" in text.splitlines()[0], text
        explorer.screenshot(path=shots / "3-flip.png")
    print(f"wall time {time.perf_counter() - tic:.0f} s")
