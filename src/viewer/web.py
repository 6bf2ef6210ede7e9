"""`viewer=web`: nerfstudio's live viewer on viser, for training (train.py) and for a checkpoint (view.py).

It shows the training cameras as frustums with their images (click one to look through it), moved as
pose refinement moves them (viewer/poses.py), renders the model at each browser's camera progressively
(viewer/render.py) within the time share that keeps training fast (viewer/share.py), and has the
controls and metrics of viewer/panel.py. The loop sees it only as `LoopHooks`: it claims the model at
the start of `fit()`, lends it between steps and gives it back at the end.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import viser

from tracking.local_log import METRICS_FILENAME
from training.loop import LoopHooks
from viewer import scene_of
from viewer.camera import frustum_pose
from viewer.panel import Panel, Ticker
from viewer.poses import FrustumPoses
from viewer.server import close_log, open_log, open_server, say_address, serve_until_interrupted, url_of
from viewer.render import CudaSpan, Renderer, Settings, Target, View
from viewer.share import DeviceShare

log = logging.getLogger("train")
vlog = logging.getLogger("viewer")

THUMBNAIL_HEIGHT = 100  # pixels of a frustum's image (nerfstudio's thumbnail size)


def display_indices(n: int, limit: int) -> list[int]:
    """Which of `n` training cameras to draw: all (`limit` -1 or >= n), else `limit` spread evenly."""
    if limit < 0 or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist())) if limit else []


def thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) of at most THUMBNAIL_HEIGHT rows, area-averaged."""
    h, w = image.shape[:2]
    if h <= THUMBNAIL_HEIGHT:
        return image
    size = (THUMBNAIL_HEIGHT, max(1, round(w * THUMBNAIL_HEIGHT / h)))
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(t, size=size, mode="area")[0].permute(1, 2, 0).round().byte().numpy()


class WebViewer(LoopHooks):
    needs_scene = True  # the pipeline must declare viewer_scene() (checked before it is built)

    def __init__(self, pipeline, run_dir: Path, training: bool = True, total_steps: int | None = None,
                 step: int = 0, *, relative_log_filename: str, websocket_port: int | None, websocket_port_default: int,
                 websocket_host: str, num_rays_per_chunk: int, max_num_display_images: int,
                 quit_on_train_completion: bool, image_format: str, jpeg_quality: int, train_util: float):
        self.scene = scene_of(pipeline)
        self.quit_on_train_completion = quit_on_train_completion
        self.host, self._closed, self._log_handler = websocket_host, False, None
        self.server, self.port, note = open_server(websocket_host, websocket_port, websocket_port_default)
        try:
            device = self.scene.device
            self.share = DeviceShare(train_util, training,
                                     span=(lambda: CudaSpan(device)) if device.type == "cuda" else None)
            self.share.step = step
            self.settings = Settings(output=self.scene.outputs[0], max_res=512, image_format=image_format,
                                     jpeg_quality=jpeg_quality)
            self.renderer = Renderer(self.scene, self.share, self.settings, num_rays_per_chunk)
            self.frustums = self._add_frustums(max_num_display_images)
            self.poses = self._follow_refinement()
            self.panel = Panel(self.server, self.share, self.settings, self.scene.outputs,
                               Path(run_dir) / METRICS_FILENAME, total_steps, training, self._show_frustums,
                               self._choose)
            self._set_initial_camera()
            self._log_handler = open_log(Path(run_dir) / relative_log_filename)
        except BaseException:
            self.server.stop()
            raise
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(lambda client: self.renderer.remove(client.client_id))
        self.renderer.start()
        self.ticker = Ticker(self._tick)
        self.ticker.start()
        say_address(websocket_host, note)
        log.info("viewer: %s (%s)", self.url, "the training cameras, a live render, the metrics, pause/resume"
                 if training else "the trained model and its run's metrics")
        vlog.info("viewer at %s", self.url)

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    # ------------------------------------------------------------------ setup
    def _add_frustums(self, limit: int) -> list:
        """The frustums of the training cameras `display_indices` picks, at their refined poses where training
        refines them (a checkpoint's, a resumed run's)."""
        cams = self.scene.cameras
        c2w = cams.camera_to_worlds
        if self.scene.refined_poses is not None:
            c2w = self.scene.refined_poses(torch.arange(len(cams), device=cams.device))
        c2w = c2w.detach().cpu().numpy()
        centres = c2w[:, :, 3]
        spread = float(np.median(np.linalg.norm(centres - centres.mean(0), axis=1))) if len(cams) > 1 else 1.0
        self.frustum_indices = display_indices(len(cams), limit)
        handles = []
        for i in self.frustum_indices:
            h, w = int(cams.height[i, 0]), int(cams.width[i, 0])
            fov = 2.0 * math.atan(0.5 * h / float(cams.fy[i, 0]))
            wxyz, position = frustum_pose(c2w[i])
            handle = self.server.scene.add_camera_frustum(
                f"/training_cameras/{i:05d}", fov=fov, aspect=w / h, scale=0.1 * max(spread, 1e-3),
                image=thumbnail(self.scene.image(i)), format=self.settings.image_format,
                jpeg_quality=self.settings.jpeg_quality, wxyz=wxyz, position=position, color=(20, 20, 20),
                thickness=1.5, thickness_units="screen")
            handle.on_click(self._look_through)
            handles.append(handle)
        return handles

    def _follow_refinement(self) -> FrustumPoses | None:
        if self.scene.refined_poses is None:
            return None
        return FrustumPoses(self.scene.refined_poses, self.frustum_indices, self.frustums, self.scene.device,
                            self.server.atomic)

    @staticmethod
    def _look_through(event) -> None:
        """Clicking a frustum puts the clicking browser's camera at that training camera."""
        with event.client.atomic():
            event.client.camera.wxyz = event.target.wxyz
            event.client.camera.position = event.target.position

    def _show_frustums(self, shown: bool) -> None:
        for handle in self.frustums:
            handle.visible = shown

    def _set_initial_camera(self) -> None:
        """Behind the first training camera (half as far again from the scene's centre), looking at the centre."""
        c2w = self.scene.cameras.camera_to_worlds[0].detach().cpu().numpy()
        h, fy = int(self.scene.cameras.height[0, 0]), float(self.scene.cameras.fy[0, 0])
        center = np.asarray(self.scene.center, dtype=np.float64)
        initial = self.server.initial_camera
        initial.position = tuple(center + 1.5 * (c2w[:, 3] - center))
        initial.look_at = tuple(center)
        initial.up = (0.0, 0.0, 1.0)
        initial.fov = 2.0 * math.atan(0.5 * h / fy)

    def _choose(self, **values) -> None:
        self.settings.choose(**values)
        self.renderer.wake()

    def _connect(self, client: viser.ClientHandle) -> None:
        def show(image: np.ndarray, depth: np.ndarray) -> None:
            client.scene.set_background_image(image, format=self.settings.image_format,
                                              jpeg_quality=self.settings.jpeg_quality, depth=depth)

        target = Target(client.client_id, show)

        def moved(camera: viser.CameraHandle) -> None:
            target.move(View(tuple(camera.wxyz), tuple(camera.position), float(camera.fov), float(camera.aspect)))
            self.renderer.wake()

        client.camera.on_update(moved)
        moved(client.camera)
        self.renderer.add(target)
        vlog.info("client %d connected", client.client_id)

    def _tick(self) -> None:
        try:
            self.panel.update()
        except Exception:  # the panel must never stop the viewer
            vlog.exception("viewer panel update failed")
        try:
            if self.poses is not None:
                self.poses.apply()
        except Exception:  # nor the frustums
            vlog.exception("viewer frustum update failed")

    # ------------------------------------------------------------------ LoopHooks
    def fit_started(self, step: int) -> None:
        self.share.claim(step)
        if self.poses is not None:  # a resumed run's poses (restored after the viewer was built)
            self.poses.request(step, force=True)

    def step_done(self, step: int) -> None:
        if self.poses is not None:
            self.poses.request(step)
        self.share.between_steps(step)

    def fit_ended(self) -> None:
        try:
            if self.poses is not None:  # the trained poses, for the viewer that stays up after training
                self.poses.request(self.share.step, force=True)
        except Exception:  # also called as a failed run unwinds: its own error is the one to see
            vlog.exception("viewer: the frustums keep their last poses")
        self.share.release()
        self.panel.training_ended()
        self.renderer.wake()

    # ------------------------------------------------------------------ lifetime
    def serve_after_training(self) -> None:
        """nerfstudio's default (quit_on_train_completion=false): the viewer stays up on the trained model
        until Ctrl-C (or SIGTERM); the run itself has already finished."""
        from cli.entry import in_multirun_job

        if self.quit_on_train_completion:
            return
        if in_multirun_job():
            log.info("viewer closed with the job: a sweep's jobs do not wait for Ctrl-C")
            return
        log.info("training done; the viewer keeps serving the trained model at %s until Ctrl-C "
                 "(viewer.quit_on_train_completion=true quits at once)", self.url)
        self.serve_forever()

    def serve_forever(self) -> None:
        serve_until_interrupted()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.share.close()
        self.renderer.stop()
        self.ticker.stop()
        self.renderer.join(timeout=10)
        self.server.stop()
        close_log(self._log_handler)
