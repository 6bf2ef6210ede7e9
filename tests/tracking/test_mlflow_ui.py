"""What a person sees in a real browser: the run's links open MLflow's runs view with the run's
metrics, not the GenAI view MLflow 3 starts in. Headless Chromium through selenium, on an
`mlflow server` on loopback; Chromium is installed with apt-get where it can be, else the test
skips saying why (tests/browser.py)."""

from __future__ import annotations

import pytest

from browser import new_driver, quit_driver
from mlflow_server import free_port, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/browser.py installs it with apt-get where it can, else skips saying why)."""
    driver = new_driver(1400, 900)
    yield driver
    quit_driver(driver)


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = start_server(port, tmp_path)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def _page_text(browser, url: str, wanted: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 90).until(lambda b: wanted in b.find_element("tag name", "body").text)
    return browser.find_element("tag name", "body").text


def test_the_run_links_open_the_runs_view_with_its_metrics(browser, server, tmp_path):
    from mlflow.tracking import MlflowClient

    from tracking.mlflow_tracker import EXPERIMENT_KIND_TAG, MLflowTracker

    tracker = MLflowTracker(tracking_uri=server, experiment_name="quickstart")
    tracker.start(tmp_path / "run", {"batch_size": 16}, {}, run_name="quickstart 12-04 10:00:00")
    for step in range(1, 5):
        tracker.log_metrics({"train/loss": 1.0 / step}, step=step)
    tracker.finish("FINISHED")
    where = tracker.location()
    experiment = MlflowClient(server).get_experiment_by_name("quickstart")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"

    # the experiment's link: the runs table, in the Model training view, with the run in it
    text = _page_text(browser, where["experiment_url"], "quickstart 12-04 10:00:00")
    assert "/runs" in browser.current_url and "workflowType=machine_learning" in browser.current_url
    assert "Run Name" in text and "Observability" not in text  # the GenAI view's navigation is not there
    shot = tmp_path / "runs_view.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # the run's link: its page, with the metric it logged
    _page_text(browser, where["url"], "train/loss")
    assert f"/runs/{where['run_id']}" in browser.current_url
