"""The viewer's parts without a browser: camera conversions, ports, the metrics feed, renders of a tiny
nerfacto at a browser camera (sizes, outputs, and that a render changes nothing training computes), and
training-camera frustums that follow pose refinement (read back from viser's scene nodes)."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch

from config.errors import ConfigError
from data.nerf.cameras import Cameras
from viewer.camera import frustum_pose, render_size, viewer_cameras, viewer_rays, z_depth_factor
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


def test_viewer_rays_are_the_browser_cameras_image_rays():
    """The renderer's rays (pixel grid made where they are cast, no read of the camera's size back from the
    device) are the camera's own image rays, in the same row-major order."""
    wxyz, position = frustum_pose(_random_c2w(4).numpy())
    expected = viewer_cameras(wxyz, position, 0.8, 6, 10, torch.device("cpu")).generate_image_rays(0)
    rays = viewer_rays(wxyz, position, 0.8, 6, 10, torch.device("cpu"))
    assert len(rays) == 60
    for name in ("origins", "directions", "pixel_area", "camera_indices", "directions_norm"):
        assert torch.equal(getattr(rays, name), getattr(expected, name)), name


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
    """A builder of the tiny nerfacto pipeline, freshly seeded at each call (on the CPU unless told)."""
    from pipelines.nerf import NerfPipeline
    from training.rng import seed_everything

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))

    def build(device: str = "cpu", overrides: tuple[str, ...] = ()):
        cfg = compose([o for o in TINY if o != "machine.device_type=cpu"] + [f"machine.device_type={device}",
                                                                              *overrides])
        seed_everything(cfg.machine.seed)
        return NerfPipeline(cfg, torch.device(device))

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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: the captured step is CUDA's default"))])
def test_renders_between_steps_change_nothing_training_computes(pipeline, tmp_path, device):
    """Training with a render between every two steps ends with the weights and RNG state of training without:
    a render runs in eval mode, draws no random numbers and advances no schedule (the proposal sampler's update
    counter, the camera optimizer's). On CUDA the step is replayed from CUDA graphs (machine.cuda_graph's default
    there) and the renders run between replays, outside the graphs' memory; the hash grids' gradients are
    accumulated by atomic adds there, so the weights agree to float rounding rather than bit for bit."""
    from training.loop import LoopConfig, Trainer
    from tracking.base import NullTracker

    # Adam's eps at 1e-8 on CUDA (nerfacto's 1e-15 turns last-bit gradient differences into lr-sized steps)
    overrides = ("optimizer.fields.eps=1e-8", "optimizer.proposal_networks.eps=1e-8") if device == "cuda" else ()

    def train(render: bool):
        pipe = pipeline(device, overrides)
        hooks = RenderBetweenSteps(pipe, render)
        # 14 steps: past the proposal networks' warm-up (every step updates them until step 10), so steps without
        # their gradients (the second captured variant on CUDA) run too
        loop = LoopConfig(steps=14, log_freq=0, eval_freq=0, save_freq=0, save_checkpoint=False, progress_bar=False,
                          cuda_graph=True if device == "cuda" else None)
        tracker = NullTracker()
        run_dir = tmp_path / f"render_{render}"
        tracker.start(run_dir, params={}, tags={})
        trainer = Trainer(loop, pipe, pipe.cfg.optimizer, pipe.cfg.scheduler, tracker, run_dir, torch.device(device),
                          "", hooks=hooks)
        trainer.fit()
        assert pipe.model.training and trainer.graphed == (device == "cuda")
        rng = torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()
        return {k: v.clone() for k, v in pipe.model.state_dict().items()}, rng, hooks.shown

    plain, rng_plain, _ = train(False)
    viewed, rng_viewed, shown = train(True)
    assert len(shown) == 14  # a render really ran after every step
    assert torch.equal(rng_plain, rng_viewed)
    assert plain.keys() == viewed.keys()
    for key in plain:
        if device == "cpu":
            assert torch.equal(plain[key], viewed[key]), key
        else:
            torch.testing.assert_close(viewed[key], plain[key], rtol=1e-4, atol=1e-5, msg=key)


# ----------------------------------------------------------------------------- frustums that follow pose refinement
@pytest.mark.parametrize("mode,noise", [("SO3xR3", 0.0), ("SE3", 0.0), ("SO3xR3", 0.05)])
def test_corrected_poses_cast_the_rays_training_casts(mode, noise):
    """The pose the viewer draws for a refined camera is the one whose rays are the rays training casts for it
    (apply_to_raybundle), for each refinement mode and with the debugging noise on top."""
    from models.fields.camera_optimizer import CameraOptimizer

    torch.manual_seed(0)
    h, w, f = 6, 8, 7.0
    c2w = torch.stack([_random_c2w(seed) for seed in range(3)])
    cams = Cameras(c2w, fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h)
    opt = CameraOptimizer(3, mode=mode, position_noise_std=noise, orientation_noise_std=noise)
    with torch.no_grad():
        opt.pose_adjustment.normal_(0.0, 0.2)
        corrected = opt.corrected_poses(c2w, torch.arange(3))
    moved = Cameras(corrected, fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h)
    for i in range(3):
        trained = opt.apply_to_raybundle(cams.generate_image_rays(i))
        drawn = moved.generate_image_rays(i)
        assert torch.allclose(trained.origins, drawn.origins, atol=1e-5)
        assert torch.allclose(trained.directions, drawn.directions, atol=1e-5)
    assert not torch.allclose(corrected, c2w, atol=1e-2)


class Handle:
    """A stand-in for a viser frustum handle that counts how often its position is sent."""

    def __init__(self):
        self.wxyz, self._position, self.sets = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3), 0

    @property
    def position(self):
        return self._position

    @position.setter
    def position(self, value):
        self._position, self.sets = value, self.sets + 1


def test_frustum_poses_are_copied_at_an_interval_and_only_moved_frustums_are_sent():
    import contextlib

    import viewer.poses as poses_mod

    now = [100.0]
    c2w = torch.stack([_random_c2w(seed) for seed in range(3)])
    shift = torch.zeros(3, 3, 4)
    handles = [Handle() for _ in range(2)]
    follow = poses_mod.FrustumPoses(lambda idx: c2w[idx] + shift[idx], [0, 2], handles, torch.device("cpu"),
                                    contextlib.nullcontext, clock=lambda: now[0])
    assert not follow.apply() and follow.step is None  # nothing requested yet
    follow.request(1)
    assert follow.apply() and follow.step == 1 and [h.sets for h in handles] == [1, 1]
    for k, i in enumerate([0, 2]):
        wxyz, position = frustum_pose(c2w[i].numpy())
        assert np.allclose(handles[k].wxyz, wxyz) and np.allclose(handles[k].position, position)
    shift[2, :, 3] = 0.5
    now[0] += poses_mod.REFRESH_S / 2
    follow.request(2)  # too soon: nothing copied
    assert not follow.apply() and follow.step == 1
    follow.request(3, force=True)  # forced (the end of fit): at once; only the frustum that moved is sent
    assert follow.apply() and follow.step == 3 and [h.sets for h in handles] == [1, 2]
    assert np.allclose(handles[1].position, (c2w[2, :, 3] + 0.5).numpy())
    now[0] += poses_mod.REFRESH_S
    follow.request(4)
    assert follow.apply() and follow.step == 4 and [h.sets for h in handles] == [1, 2]
    assert follow.interval == poses_mod.REFRESH_S


def test_frustums_that_take_long_to_draw_are_drawn_less_often(monkeypatch):
    """Drawing is kept to MAX_SHARE of the time: a drawing that took d seconds puts the next copy d / MAX_SHARE
    later (here the share is tiny, so any drawing takes too long)."""
    import contextlib

    import viewer.poses as poses_mod

    monkeypatch.setattr(poses_mod, "MAX_SHARE", 1e-12)
    now = [0.0]
    c2w = torch.stack([_random_c2w(seed) for seed in range(2)])
    follow = poses_mod.FrustumPoses(lambda idx: c2w[idx], [0, 1], [Handle(), Handle()], torch.device("cpu"),
                                    contextlib.nullcontext, clock=lambda: now[0])
    follow.request(1)
    assert follow.apply() and follow.interval > 1e3 * poses_mod.REFRESH_S
    now[0] += 2 * poses_mod.REFRESH_S
    follow.request(2)
    assert not follow.apply() and follow.step == 1  # not due yet
    follow.request(3, force=True)
    assert follow.apply() and follow.step == 3


def _drawn_c2w(handle) -> np.ndarray:
    """The OpenGL camera-to-world a frustum shows, read back from viser's scene node."""
    import viser.transforms as vtf

    from viewer.camera import OPENCV_FROM_OPENGL

    rotation = vtf.SO3(np.asarray(handle.wxyz)).as_matrix() @ OPENCV_FROM_OPENGL
    return np.concatenate([rotation, np.asarray(handle.position).reshape(3, 1)], axis=1)


def _viewer_options(**changes) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return dict(relative_log_filename="viewer.txt", websocket_port=port, websocket_port_default=7007,
                websocket_host="127.0.0.1", num_rays_per_chunk=4096, max_num_display_images=-1,
                quit_on_train_completion=True, image_format="jpeg", jpeg_quality=80, train_util=0.9) | changes


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.05)


def test_frustums_follow_pose_refinement_while_nerfacto_trains(pipeline, tmp_path, monkeypatch):
    """A tiny nerfacto with SO3xR3 pose refinement trains under the web viewer (no browser: viser's server-side
    scene nodes are read). The frustums start at the dataparser's poses; mid-training, once the viewer has drawn
    the poses of the step the loop is held at, they differ from those and equal the camera optimizer's corrected
    poses; after training they show the final ones, and a viewer opened on the trained model (view.py) draws them
    at once."""
    import viewer.poses as poses_mod
    from tracking.base import NullTracker
    from training.loop import LoopConfig, Trainer
    from viewer.web import WebViewer

    monkeypatch.setattr(poses_mod, "REFRESH_S", 0.0)  # a copy after every step; the interval has its own test
    monkeypatch.setattr(poses_mod, "MAX_SHARE", float("inf"))
    pipe = pipeline()
    scene = pipe.viewer_scene()
    original = scene.cameras.camera_to_worlds.numpy().astype(np.float64)
    refinement = pipe.model.camera_optimizer

    def corrected() -> np.ndarray:
        with torch.no_grad():
            return refinement.corrected_poses(scene.cameras.camera_to_worlds, torch.arange(len(original))).numpy()

    def drawn(viewer) -> np.ndarray:
        return np.stack([_drawn_c2w(handle) for handle in viewer.frustums])

    viewer = WebViewer(pipe, tmp_path, training=True, total_steps=8, **_viewer_options())
    seen = {}

    class HoldAtStep:
        """The viewer's hooks; at step 4 the loop waits (as in a pause) until the frustums show that step."""

        def fit_started(self, step):
            viewer.fit_started(step)

        def step_done(self, step):
            viewer.step_done(step)
            if step == 4:
                _wait(lambda: viewer.poses.step == 4, "frustums at step 4")
                seen["drawn"], seen["corrected"] = drawn(viewer), corrected()

        def fit_ended(self):
            viewer.fit_ended()

    try:
        assert viewer.poses is not None and len(viewer.frustums) == len(original) == 4
        assert np.allclose(drawn(viewer), original, atol=1e-6)  # a fresh run: the dataparser's poses
        loop = LoopConfig(steps=8, log_freq=0, eval_freq=0, save_freq=0, save_checkpoint=False, progress_bar=False)
        tracker = NullTracker()
        tracker.start(tmp_path, params={}, tags={})
        Trainer(loop, pipe, pipe.cfg.optimizer, pipe.cfg.scheduler, tracker, tmp_path, torch.device("cpu"), "",
                hooks=HoldAtStep()).fit()

        moved = np.abs(seen["drawn"] - original).reshape(4, -1).max(axis=1)
        assert (moved > 1e-4).all(), moved  # every training camera's frustum has moved ...
        assert np.allclose(seen["drawn"], seen["corrected"], atol=1e-6)  # ... to its refined pose
        _wait(lambda: viewer.poses.step == 8, "frustums at the last step")
        final = corrected()
        assert np.allclose(drawn(viewer), final, atol=1e-6) and not np.allclose(final, seen["corrected"], atol=1e-5)
    finally:
        viewer.close()

    trained = WebViewer(pipe, tmp_path, training=False, step=8, **_viewer_options(max_num_display_images=2))
    try:
        assert [int(i) for i in trained.frustum_indices] == [0, 3]
        assert np.allclose(drawn(trained), final[[0, 3]], atol=1e-6)
    finally:
        trained.close()


def test_without_pose_refinement_the_frustums_stay(compose, tmp_path, monkeypatch):
    from pipelines.nerf import NerfPipeline

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    cfg = compose([o for o in TINY if not o.startswith("model.camera_optimizer")] + ["model.camera_optimizer.mode=off"])
    assert NerfPipeline(cfg, torch.device("cpu")).viewer_scene().refined_poses is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the check is that no host sync occurs")
def test_a_pose_copy_request_never_waits_for_the_device():
    """request() runs on the training thread between steps: CUDA's sync debug mode makes any host sync an error."""
    import contextlib

    from models.fields.camera_optimizer import CameraOptimizer
    from viewer.poses import FrustumPoses

    device = torch.device("cuda")
    opt = CameraOptimizer(64, mode="SO3xR3").to(device)
    with torch.no_grad():
        opt.pose_adjustment.normal_(0.0, 0.1)
    c2w = torch.stack([_random_c2w(seed) for seed in range(64)]).to(device)
    follow = FrustumPoses(torch.no_grad()(lambda idx: opt.corrected_poses(c2w[idx], idx)), range(64),
                          [Handle() for _ in range(64)], device, contextlib.nullcontext)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        follow.request(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert follow.apply() and follow.step == 1
    expected = opt.corrected_poses(c2w, torch.arange(64, device=device)).detach().cpu().numpy()
    assert np.allclose(_drawn_c2w(follow.handles[5]), expected[5], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the check is that no host sync occurs")
def test_a_render_turn_never_waits_for_the_device(compose, tmp_path, monkeypatch):
    """A render chunk's turn is lent between two training steps: its rays, forward pass and copy to host memory
    are queued behind the step's kernels without a host sync (CUDA's sync debug mode makes one an error), and
    what it copied, read once the share has settled the turn, is the render a synchronous path makes."""
    from pipelines.nerf import NerfPipeline
    from viewer.render import CudaSpan

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    device = torch.device("cuda")
    pipe = NerfPipeline(compose([o for o in TINY if o != "machine.device_type=cpu"] + ["machine.device_type=cuda"]),
                        device)
    scene = pipe.viewer_scene()
    wxyz, position = frustum_pose(scene.cameras.camera_to_worlds[0].cpu().numpy())
    names = ("rgb", "depth")
    expected = scene.render(viewer_cameras(wxyz, position, 0.9, 24, 32, device).generate_image_rays(0), names)
    share = DeviceShare(train_util=0.5, training=False, span=lambda: CudaSpan(device))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with share.turn() as turn:
            out = scene.render(viewer_rays(wxyz, position, 0.9, 24, 32, device), names)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    share.settle()
    assert turn.seconds > 0 and share.render_seconds == turn.seconds
    for name in names:
        assert out[name].device.type == "cpu" and torch.allclose(out[name], expected[name], atol=1e-5), name
