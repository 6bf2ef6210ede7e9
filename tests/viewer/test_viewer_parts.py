"""The viewer's parts without a browser: camera conversions, ports, the metrics feed, renders of a tiny
nerfacto at a browser camera (sizes, outputs, and that a render changes nothing training computes)."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch

from config.errors import ConfigError
from data.nerf.cameras import Cameras
from viewer.camera import frustum_pose, render_size, viewer_cameras, z_depth_factor
from viewer.panel import MetricsFeed
from viewer.ports import choose_port
from viewer.render import Renderer, Settings, Target, View, display, levels
from viewer.share import DeviceShare


def _random_c2w(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    q = q * torch.sign(torch.linalg.det(q))  # a rotation
    return torch.cat([q, torch.randn(3, 1, generator=g)], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_browser_camera_at_a_frustum_sees_what_the_training_camera_sees(seed):
    """frustum_pose (ours -> viser) and viewer_cameras (viser -> ours) are inverse: the viewer camera placed at a
    training camera's frustum, with its field of view, casts the training camera's rays."""
    h, w, f = 24, 40, 30.0
    c2w = _random_c2w(seed)
    train = Cameras(c2w, fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h)
    wxyz, position = frustum_pose(c2w.numpy())
    view = viewer_cameras(wxyz, position, 2 * math.atan(0.5 * h / f), h, w, torch.device("cpu"))
    a, b = train.generate_image_rays(0), view.generate_image_rays(0)
    assert torch.allclose(a.origins, b.origins, atol=1e-6)
    assert torch.allclose(a.directions, b.directions, atol=1e-5)
    # the frustum looks along the training camera's view direction (OpenCV +z = OpenGL -z)
    import viser.transforms as vtf

    forward = vtf.SO3(wxyz).as_matrix()[:, 2]
    assert np.allclose(forward, -c2w[:, 2].numpy(), atol=1e-6)


def test_z_depth_factor_turns_ray_distance_into_depth_along_the_axis():
    h, w, fov = 8, 12, 1.1
    cams = viewer_cameras((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), fov, h, w, torch.device("cpu"))
    dirs = cams.generate_image_rays(0).directions.view(h, w, 3).numpy()
    forward = np.array([0.0, 0.0, 1.0])  # identity viser rotation: the camera looks down world +z
    assert np.allclose(z_depth_factor(h, w, fov), dirs @ forward, atol=1e-6)


def test_render_sizes_and_levels():
    assert render_size(16 / 9, 512) == (288, 512) and render_size(0.5, 512) == (512, 256)
    assert levels(512) == [64, 128, 256, 512] and levels(100) == [64, 100] and levels(64) == [64]


def test_display_keeps_colours_and_greys_one_channel():
    rgb = torch.tensor([[[0.0, 0.5, 1.0]]])
    assert display(rgb).tolist() == [[[0, 128, 255]]]
    acc = torch.tensor([[[0.25]], [[1.0]]])
    assert display(acc)[:, 0, 0].tolist() == [64, 255]  # in [0, 1]: as it is
    depth = torch.linspace(1.0, 1000.0, 200).view(200, 1, 1)  # far-plane misses must not flatten the rest
    grey = display(depth)[:, 0, 0]
    assert grey[1] < grey[100] < grey[198] and grey[0] == 0 and grey[-1] == 255


def test_a_taken_port_is_refused_when_asked_for_and_skipped_once_when_not():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as e:
            choose_port("127.0.0.1", port, 7007)
        assert f"viewer.websocket_port={port} is in use on 127.0.0.1" in str(e.value)
        assert "viewer.websocket_port=null" in str(e.value) and "\n" not in str(e.value)
        chosen, note = choose_port("127.0.0.1", None, port)
        assert chosen > port and note == f"viewer: port {port} is in use on 127.0.0.1, serving on {chosen} instead"
    assert choose_port("127.0.0.1", None, chosen) == (chosen, None)
    with pytest.raises(ConfigError, match="viewer.websocket_host=no-such-host.invalid is not an address"):
        choose_port("no-such-host.invalid", None, 7007)


def test_metrics_feed_reads_the_log_as_it_grows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    feed = MetricsFeed(path)
    assert not feed.poll()
    path.write_text(json.dumps({"step": 10, "time": 1.0, "train/loss": 0.5, "train/psnr": 12.0}) + "\n"
                    + '{"step": 20, "train/loss": 0.')  # a line still being written
    assert feed.poll() and feed.latest["train/loss"] == (10, 0.5)
    with path.open("a") as f:
        f.write('4, "note": "text", "flag": true, "train/psnr": NaN}\nnot json\n')
    assert feed.poll() and feed.latest["train/loss"] == (20, 0.4)
    assert "note" not in feed.latest and "flag" not in feed.latest and feed.latest["train/psnr"] == (10, 12.0)
    assert feed.series["train/loss"] == ([10, 20], [0.5, 0.4])
    path.write_text(json.dumps({"step": 10, "train/loss": 0.7}) + "\n")  # a resume cut the file back
    assert feed.poll() and feed.series["train/loss"] == ([10], [0.7])
    assert "| train/loss | 0.7 | 10 |" in feed.table()


# ----------------------------------------------------------------------------- renders of a tiny nerfacto
TINY = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic",
        "logger=none", "machine.device_type=cpu", "data.scene.name=viewer16", "data.scene.n_views=6",
        "data.scene.size=16", "data.dataparser.eval_mode=interval", "data.dataparser.eval_interval=3",
        "data.train_num_rays_per_batch=64", "model.num_levels=2", "model.base_res=8",
        "model.max_res=16", "model.log2_hashmap_size=8", "model.hidden_dim=8", "model.hidden_dim_color=8",
        "model.appearance_embed_dim=2", "model.num_proposal_samples_per_ray=[8,8]", "model.num_nerf_samples_per_ray=8",
        "model.proposal_net_args_list=[{hidden_dim:8,log2_hashmap_size:8,num_levels:2,max_res:16,use_linear:false},"
        "{hidden_dim:8,log2_hashmap_size:8,num_levels:2,max_res:16,use_linear:false}]",
        "model.proposal_update_every=2", "model.camera_optimizer.mode=SO3xR3", "use_amp=false", "seed=3",
        "eval.steps_per_eval_batch=0", "eval.steps_per_eval_image=0", "eval.steps_per_eval_all_images=0"]


@pytest.fixture
def pipeline(compose, tmp_path, monkeypatch):
    from pipelines.nerf import NerfPipeline
    from training.rng import seed_everything

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    cfg = compose(TINY)

    def build():
        seed_everything(cfg.machine.seed)
        return NerfPipeline(cfg, torch.device("cpu"))

    return build


def _render_all(renderer: Renderer) -> None:
    while (job := renderer.next_job()) is not None:
        renderer.render(job)


def test_a_view_renders_coarse_to_fine_at_the_browser_camera(pipeline):
    pipe = pipeline()
    scene = pipe.viewer_scene()
    assert scene.outputs == ("rgb", "depth", "accumulation") and len(scene.cameras) == pipe.datamanager.num_train_images
    assert scene.image(0).dtype == np.uint8 and scene.image(0).shape == (16, 16, 3)
    share = DeviceShare(train_util=0.9, training=False)
    shown = []
    renderer = Renderer(scene, share, Settings(output="rgb", max_res=96), chunk=500)
    target = Target(0, lambda image, depth: shown.append((image, depth)))
    renderer.add(target)
    wxyz, position = frustum_pose(scene.cameras.camera_to_worlds[0].numpy())
    target.move(View(tuple(wxyz), tuple(position), 0.9, 2.0))
    target.moved_at -= 1.0  # the camera has rested
    _render_all(renderer)
    assert [im.shape for im, _ in shown] == [(32, 64, 3), (48, 96, 3)]  # 64, then 96 on the long side
    assert all(im.dtype == np.uint8 and d.shape == im.shape[:2] and np.isfinite(d).all() for im, d in shown)
    renderer.settings.choose(output="accumulation")  # another output: from the coarse level again
    _render_all(renderer)
    assert [im.shape for im, _ in shown[2:]] == [(32, 64, 3), (48, 96, 3)]
    assert all((im[..., 0] == im[..., 1]).all() for im, _ in shown[2:])  # one channel, in grey

    target.move(View(tuple(wxyz), tuple(position), 0.9, 2.0))  # the camera moves: the coarse render first
    job = renderer.next_job()
    assert job.level == 0
    target.move(View(tuple(wxyz), (0.0, 0.0, 0.0), 0.9, 2.0))  # ... and moves on before it is done:
    renderer.render(job)  # a coarse picture is still finished (a camera that keeps moving sees one)
    assert len(shown) == 5
    assert renderer.next_job().level == 0  # then the newer camera gets its own
    target.moved_at -= 1.0
    _render_all(renderer)
    target.move(View(tuple(wxyz), tuple(position), 0.9, 2.0))
    target.moved_at -= 1.0
    renderer.render(renderer.next_job())
    job = renderer.next_job()
    assert job.level == 1
    target.move(View(tuple(wxyz), (0.0, 0.0, 0.0), 0.9, 2.0))  # a finer render whose camera moves is dropped
    count = len(shown)
    renderer.render(job)
    assert len(shown) == count


class RenderBetweenSteps:
    """Loop hooks that render a view between every two steps, as the render thread does in the loop's turns."""

    def __init__(self, pipe, render: bool):
        self.share = DeviceShare(train_util=0.5, training=True)
        self.renderer = Renderer(pipe.viewer_scene(), self.share, Settings(output="rgb", max_res=32), chunk=300)
        self.target = Target(0, lambda image, depth: self.shown.append(image))
        self.renderer.add(self.target)
        self.render, self.shown = render, []

    def fit_started(self, step):
        self.share.claim(step)

    def step_done(self, step):
        if self.render:  # here, in the training thread: it hands the model over and takes it back
            self.share.release()
            self.target.move(View((1.0, 0.0, 0.0, 0.0), (0.1 * step, 0.0, -1.5), 0.8, 1.0))
            _render_all(self.renderer)
            self.share.claim(step)

    def fit_ended(self):
        self.share.release()


def test_renders_between_steps_change_nothing_training_computes(pipeline, tmp_path):
    """Training with a render between every two steps ends with the weights and RNG state of training without:
    a render runs in eval mode, draws no random numbers and advances no schedule (the proposal sampler's update
    counter, the camera optimizer's)."""
    from training.loop import LoopConfig, Trainer
    from tracking.base import NullTracker

    def train(render: bool):
        pipe = pipeline()
        hooks = RenderBetweenSteps(pipe, render)
        loop = LoopConfig(steps=5, log_freq=0, eval_freq=0, save_freq=0, save_checkpoint=False, progress_bar=False)
        tracker = NullTracker()
        run_dir = tmp_path / f"render_{render}"
        tracker.start(run_dir, params={}, tags={})
        Trainer(loop, pipe, pipe.cfg.optimizer, pipe.cfg.scheduler, tracker, run_dir, torch.device("cpu"), "",
                hooks=hooks).fit()
        assert pipe.model.training
        return {k: v.clone() for k, v in pipe.model.state_dict().items()}, torch.get_rng_state(), hooks.shown

    plain, rng_plain, _ = train(False)
    viewed, rng_viewed, shown = train(True)
    assert len(shown) == 5  # a render really ran after every step
    assert torch.equal(rng_plain, rng_viewed)
    assert plain.keys() == viewed.keys()
    for key in plain:
        assert torch.equal(plain[key], viewed[key]), key
