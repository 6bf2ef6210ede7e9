"""The live viewer in a real browser (headless chromium through selenium; tests/browser.py installs it).

- `train.py ... --vis viewer` on a free loopback port: it listens on 127.0.0.1 only; the page shows a
  render (the canvas is no longer the empty white view); dragging the camera brings a render at the new
  pose; pause holds training at one step and resume goes on.
- A trained checkpoint served in this process: moving the browser's camera through viser's Python API
  (`client.camera.position = ...`) brings a new render, and the canvas shows the very picture the viewer
  sent (compared pixel by pixel, frustums hidden); the output selector switches to depth.
- `view.py` honours `viewer.websocket_host` (127.0.0.2 serves, 127.0.0.1 refuses).

The tiny nerfacto of tests/e2e/test_nerf_train.py trains on the generated 32x32 scene. Set
VIEWER_SCREENSHOT=<file.png> to keep the browser's view of the training run (docs/viewer.png is one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import canvas_rgb, ensure_browser, is_loopback, listening_addresses, main_canvas, new_driver, quit_driver
from e2e.test_nerf_train import TINY_NERF
from helpers import REPO, run_train
from viewer.ports import port_is_free

pytestmark = pytest.mark.slow

WAIT_S = 180  # bound on each wait below (a loaded 2-core CI machine renders slowly)
# OpenMP workers that sleep at once instead of spinning: on a CPU shared with other jobs, spinning made these
# tiny runs several times slower (bench/viewer_overhead.py's note)
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
# small chunks and a generous render share, so that renders come quickly on a CPU
VIEWER = ["--viewer.num-rays-per-chunk", "2048", "viewer.train_util=0.5"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = WAIT_S, proc: subprocess.Popen | None = None, out: Path = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if isinstance(value, np.ndarray) or value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{out.read_text()[-4000:]}")
        time.sleep(0.25)
    pytest.fail(f"no {what} within {timeout:.0f} s" + (f":\n{out.read_text()[-4000:]}" if out else ""))


def renders(log: Path) -> list[dict]:
    """The viewer log's render lines: {client, output, size, level, step, position}."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        m = re.search(r"render client=(\d+) output=(\w+) size=(\d+)x(\d+) level=(\d+) step=(\d+) .*position=(\[.*\])",
                      line)
        if m:
            found.append({"client": int(m[1]), "output": m[2], "size": (int(m[3]), int(m[4])), "level": int(m[5]),
                          "step": int(m[6]), "position": json.loads(m[7])})
    return found


def not_blank(pixels: np.ndarray | None, flat_ok: bool = False) -> bool:
    """The 3D view shows a render: most of it is not viser's empty white, and (unless `flat_ok`: a view of the
    sky alone) it is not one flat colour."""
    if pixels is None:
        return False
    off_white = (np.abs(pixels.astype(int) - 255).sum(-1) > 40).mean()
    return off_white > 0.6 and (flat_ok or pixels.reshape(-1, 3).std(0).max() > 5)


def shown(browser) -> np.ndarray | None:
    """The 3D view's pixels where they show a render, else None."""
    pixels = canvas_rgb(browser)
    return pixels if not_blank(pixels) else None


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("hydrabot_home")


@pytest.fixture(scope="module")
def browser():
    ensure_browser()
    driver = new_driver()
    yield driver
    quit_driver(driver)


def status_step(driver, label: str) -> int | None:
    """The step the panel's status line shows after `label` ("Training step", "Paused at step")."""
    text = driver.find_element("tag name", "body").text
    m = re.search(rf"{label} ([\d,]+)", text)
    return int(m[1].replace(",", "")) if m else None


def click_button(driver, text: str) -> None:
    driver.find_element("xpath", f"//button[normalize-space()='{text}']").click()


def test_training_run_viewer_in_a_browser(tmp_path, home, browser):
    port = free_port()
    run = tmp_path / "run"
    out = tmp_path / "train.out"
    cmd = [sys.executable, str(REPO / "src" / "train.py"), *TINY_NERF, "steps=100000", "log_freq=10",
           "--vis", "viewer", "--viewer.websocket-port", str(port), *VIEWER, f"hydra.run.dir={run}"]
    env = {**os.environ, **PASSIVE, "HYDRABOT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with out.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: f"viewer: {url} " in out.read_text(), "viewer address line", proc=proc, out=out)
        assert "translated: python src/train.py" in out.read_text() and "viewer=web logger=none" in out.read_text()
        listening = listening_addresses(proc.pid)
        assert ("127.0.0.1", port) in listening and all(is_loopback(a) for a, _ in listening), listening

        browser.get(url)
        log = run / "viewer_log_filename.txt"
        first = wait_for(lambda: renders(log), "render in the viewer log", proc=proc, out=out)[0]
        assert first["client"] == 0 and first["output"] == "rgb" and first["size"][0] == 64  # the coarse one first
        wait_for(lambda: shown(browser), "non-blank canvas", timeout=30, proc=proc, out=out)
        if os.environ.get("VIEWER_SCREENSHOT"):  # for the docs: a few hundred steps in, the finest render
            wait_for(lambda: (status_step(browser, "Training step") or 0) >= 400, "step 400", proc=proc, out=out)
            done = len(renders(log))
            wait_for(lambda: any(r["level"] == 3 for r in renders(log)[done:]), "a full render", proc=proc, out=out)
            time.sleep(1.5)
            browser.execute_script("document.querySelectorAll('[class*=Notification-root]').forEach(e => e.remove())")
            browser.save_screenshot(os.environ["VIEWER_SCREENSHOT"])

        # drag the view: the browser sends its new camera, and a render at that pose follows
        from selenium.webdriver.common.action_chains import ActionChains

        # viser's client reports its default camera before the initial one the viewer set, so the first render can
        # be at a pose the browser left at once: the drag starts from where a finer render shows the camera rested
        wait_for(lambda: any(r["level"] > 0 for r in renders(log)), "a finer render at the resting camera", proc=proc,
                 out=out)
        pixels = wait_for(lambda: shown(browser), "non-blank canvas at the resting camera", timeout=30, proc=proc,
                          out=out)
        before = renders(log)
        seen = {tuple(r["position"]) for r in before}
        ActionChains(browser).move_to_element(main_canvas(browser)).click_and_hold().move_by_offset(80, 20) \
            .release().perform()
        moved = wait_for(lambda: [r for r in renders(log)[len(before):] if tuple(r["position"]) not in seen],
                         "render at the dragged camera", proc=proc, out=out)
        assert moved[0]["level"] == 0
        time.sleep(1.0)
        after = canvas_rgb(browser)
        assert not_blank(after, flat_ok=True)
        assert (np.abs(scaled(after, (90, 160)) - scaled(pixels, (90, 160))).sum(-1) > 30).mean() > 0.05

        # pause holds training at one step; resume goes on
        wait_for(lambda: status_step(browser, "Training step"), "training status", proc=proc, out=out)
        click_button(browser, "Pause training")
        held = wait_for(lambda: status_step(browser, "Paused at step"), "paused status", proc=proc, out=out)
        time.sleep(3.0)  # the panel refreshes every second: three refreshes at the same step
        assert status_step(browser, "Paused at step") == held
        records = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert max(records) <= held
        click_button(browser, "Resume training")
        wait_for(lambda: (status_step(browser, "Training step") or 0) > held, "training after resume", proc=proc,
                 out=out)
    finally:
        proc.send_signal(signal.SIGTERM)  # training.termination: the run ends KILLED, the viewer closes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, out.read_text()[-3000:]
    assert port_is_free("127.0.0.1", port)  # nothing listens there any more


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, home) -> Path:
    run = tmp_path_factory.mktemp("viewer") / "run"
    r = run_train([*TINY_NERF, "steps=100", "log_freq=20", f"hydra.run.dir={run}"],
                  env={**PASSIVE, "HYDRABOT_HOME": str(home)})
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_camera_moved_through_viser_api_brings_a_new_render(trained_run, home, monkeypatch, browser, tmp_path):
    import torch  # noqa: F401  (the pipeline below runs in this process)

    from pipelines import load_checkpoint
    from viewer.web import WebViewer

    monkeypatch.setenv("HYDRABOT_HOME", str(home))
    _, pipeline, cfg, state, _ = load_checkpoint(str(trained_run), {"machine.device_type": "cpu"})
    options = dict(relative_log_filename="viewer.txt", websocket_port=free_port(), websocket_port_default=7007,
                   websocket_host="127.0.0.1", num_rays_per_chunk=4096, max_num_display_images=8,
                   quit_on_train_completion=True, image_format="png", jpeg_quality=90, train_util=0.95)
    viewer = WebViewer(pipeline, tmp_path, training=False, step=int(state["step"]), **options)
    try:
        assert len(viewer.frustums) == 8  # max_num_display_images of the 28 training cameras
        viewer.panel.max_res.value = 128
        viewer.panel.cameras.value = False  # the canvas then shows the render alone
        shown = []
        browser.get(viewer.url)
        target = wait_for(lambda: next(iter(viewer.renderer.targets.values()), None), "browser connection")
        show = target.show
        target.show = lambda image, depth: (shown.append(image), show(image, depth))
        top = 1  # levels(128) = [64, 128]
        wait_for(lambda: shown and target.done and target.done.level == top, "finest render")
        time.sleep(1.5)
        before = canvas_rgb(browser)
        assert error(before, shown[-1]) < 12.0

        client = next(iter(viewer.server.get_clients().values()))
        old = np.asarray(client.camera.position)
        centre = np.asarray(pipeline.viewer_scene().center)
        new = centre + np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ (old - centre)  # 90 deg
        count = len(shown)
        client.camera.position = tuple(new)  # a message to the browser, which moves and reports its camera back
        client.camera.look_at = tuple(centre)
        wait_for(lambda: len(shown) > count and target.done.level == top
                 and np.allclose(target.view.position, new, atol=1e-3), "render at the new camera")
        time.sleep(1.5)
        after = canvas_rgb(browser)
        assert error(after, shown[-1]) < 12.0 and error(after, shown[-1]) < 0.5 * error(after, shown[count - 1])

        count = len(shown)
        viewer.panel.output.value = "depth"  # the output selector
        wait_for(lambda: len(shown) > count and target.done.level == top, "depth render")
        assert (shown[-1][..., 0] == shown[-1][..., 2]).all()  # grey
    finally:
        viewer.close()


def scaled(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float (h, w, 3) area-averaged to `size` (the canvas' size follows viser's adaptive pixel ratio)."""
    import torch

    t = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(t, size=size, mode="area")[0].permute(1, 2, 0).numpy()


def error(canvas: np.ndarray, image: np.ndarray) -> float:
    """How far the canvas is from showing `image`: the mean colour error (of 255), scaled to the image."""
    return float(np.abs(scaled(canvas, image.shape[:2]) - image.astype(np.float32)).mean())


def test_view_py_listens_where_websocket_host_says(trained_run, home, tmp_path):
    port = free_port("127.0.0.2")
    out = tmp_path / "view.out"
    env = {**os.environ, **PASSIVE, "HYDRABOT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(REPO / "src" / "view.py"), f"checkpoint={trained_run}",
                                 "machine.device_type=cpu", "viewer.websocket_host=127.0.0.2",
                                 f"viewer.websocket_port={port}"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=sink, stderr=sink, start_new_session=True)
    try:
        wait_for(lambda: f"viewer: http://127.0.0.2:{port} " in out.read_text(), "viewer address line", proc=proc,
                 out=out)
        assert listening_addresses(proc.pid) == {("127.0.0.2", port)}
        with urllib.request.urlopen(f"http://127.0.0.2:{port}/", timeout=30) as page:
            assert b"<html" in page.read(2000).lower()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0 and "viewer closed" in out.read_text()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_resumed_run_picks_its_viewer_afresh(trained_run, home, monkeypatch):
    """The viewer is not part of what a run trains (config.saved.FREE_GROUPS): resume=true viewer=web watches a
    run that trained without it, group first as Hydra applies it, and a plain resume opens none."""
    from training.checkpoint import last_checkpoint
    from training.run import config_for_resume

    monkeypatch.setenv("HYDRABOT_HOME", str(home))
    ckpt = last_checkpoint(trained_run)
    cfg, _ = config_for_resume(ckpt, ["resume=true", "viewer.websocket_port=7011", "viewer=web"])
    assert cfg.viewer._target_ == "viewer.web.WebViewer" and cfg.viewer.websocket_port == 7011
    assert config_for_resume(ckpt, ["resume=true"])[0].viewer._target_ == "viewer.NoViewer"
