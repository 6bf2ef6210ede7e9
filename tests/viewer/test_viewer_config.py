"""The `viewer` group and nerfstudio's `--vis` / `--viewer.*` flags: every flag lands on a real key (or, for
make-share-url, is refused saying why), `--vis` picks the viewer and the tracker, and a viewer asked of a
run it cannot show is one error line before anything is built."""

from __future__ import annotations

import pytest

from cli.seed_flags import NERFSTUDIO, VIS_CHOICES, translate_argv
from helpers import one_error_line, run_train, tiny_overrides

NERF = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic"]
# a value for each of ns-train's --viewer.* options, and what the config then holds
VIEWER_FLAGS = {
    "--viewer.relative-log-filename": ("viewer.txt", "viewer.txt"),
    "--viewer.websocket-port": ("7010", 7010),
    "--viewer.websocket-port-default": ("7020", 7020),
    "--viewer.websocket-host": ("0.0.0.0", "0.0.0.0"),
    "--viewer.num-rays-per-chunk": ("4096", 4096),
    "--viewer.max-num-display-images": ("-1", -1),
    "--viewer.quit-on-train-completion": ("True", True),
    "--viewer.image-format": ("png", "png"),
    "--viewer.jpeg-quality": ("75", 75),
}


def test_the_default_is_no_viewer_on_loopback_and_web_picks_the_viewer(compose):
    cfg = compose([])
    assert cfg.viewer._target_ == "viewer.NoViewer"
    assert (cfg.viewer.websocket_host, cfg.viewer.websocket_port, cfg.viewer.websocket_port_default) == (
        "127.0.0.1", None, 7007)  # nerfstudio binds 0.0.0.0; here only this machine unless asked
    assert compose([*NERF, "viewer=web"]).viewer._target_ == "viewer.web.WebViewer"


def test_every_viewer_flag_of_ns_train_reaches_its_key(compose):
    flags = [f for f in NERFSTUDIO if f.startswith("--viewer.")]
    assert sorted(flags) == sorted([*VIEWER_FLAGS, "--viewer.make-share-url"])
    args = [word for flag, (value, _) in VIEWER_FLAGS.items() for word in (flag, value)]
    out, _ = translate_argv(args)
    cfg = compose([*NERF, "viewer=web", *out])
    for flag, (_, expected) in VIEWER_FLAGS.items():
        key = flag[len("--viewer."):].replace("-", "_")
        assert cfg.viewer[key] == expected, flag


def test_make_share_url_is_refused_because_it_needs_the_internet():
    for args in (["--viewer.make-share-url", "True"], ["--viewer.make-share-url"], ["--viewer.make-share-url=true"]):
        with pytest.raises(ValueError) as e:
            translate_argv(args)
        assert "needs the internet" in str(e.value) and "ssh -L 7007:127.0.0.1:7007" in str(e.value)
        assert "\n" not in str(e.value)


def test_make_share_url_false_is_nerfstudios_default_and_changes_nothing():
    out, notes = translate_argv(["--viewer.make-share-url", "False", "--viewer.websocket-port", "7010"])
    assert out == ["viewer.websocket_port=7010"]
    assert any("--viewer.make-share-url=False" in note and "nothing to add" in note for note in notes)


@pytest.mark.parametrize("value", list(VIS_CHOICES))
def test_vis_picks_the_viewer_and_the_tracker(value, compose):
    out, notes = translate_argv(["--vis", value])
    viewer, logger = ("web" if value.startswith("viewer") else "none"), ("none" if value in (
        "viewer", "viewer_legacy") else "mlflow")
    assert out == [f"viewer={viewer}", f"logger={logger}"]
    if any(t in value for t in ("wandb", "tensorboard", "comet")):
        assert notes[0] == f"--vis {value}: MLflow tracks the run here (logger=mlflow)"
    cfg = compose([*NERF, *out])
    assert cfg.viewer._target_ == ("viewer.web.WebViewer" if viewer == "web" else "viewer.NoViewer")


def test_vis_names_nerfacto_and_refuses_an_unknown_value():
    from cli.seed_flags import names_nerfacto

    assert names_nerfacto(["--vis", "viewer"]) and names_nerfacto(["--viewer.websocket-port", "7010"])
    with pytest.raises(ValueError, match=r"^--vis viewer\+neptune is not one of viewer, viewer_legacy, mlflow"):
        translate_argv(["--vis", "viewer+neptune"])


@pytest.mark.slow
def test_a_policy_run_with_the_viewer_is_refused_before_anything_is_built(tmp_path):
    """The robot family declares no viewer scene: one line, exit 2, no run folder and no dataset recorded."""
    root = tmp_path / "pusht_not_recorded"
    run = tmp_path / "run"
    line = one_error_line(run_train(tiny_overrides(root, run, "viewer=web")))
    assert "the live viewer shows neural fields, and this is a robot run" in line and "viewer=none" in line
    assert not run.exists() and not root.exists()
