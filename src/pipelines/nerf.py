"""Neural fields: scene (dataparser) -> ray batches (datamanager) -> nerfacto -> held-out views.

The same loop as the robot family trains it: a batch is one `next_train()` of the datamanager
(a RayBundle and its pixels' colours); the model's step-dependent schedules (proposal sampler
updates, weight annealing) get the optimizer step from the batch stream's own position, so they
resume with it. Data-parallel ranks (as nerfstudio's) each draw their own rays (the datamanager is
seeded `seed + 2 x rank`: its eval stream takes the next seed) and the forward goes through the
DistributedDataParallel wrapper, which averages the gradients. Evaluation runs at nerfstudio's three cadences (`evaluations()`): a batch of
held-out rays, one held-out image, and all held-out views (PSNR, SSIM, LPIPS only with local
weights, rays/s); rendered images are saved as `ground truth | render | depth` PNGs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from config.errors import ConfigError
from data.nerf.dataparsers import SceneError
from models.fields.metrics import psnr, ssim
from training import distributed as dist_lib
from training.distributed import SINGLE, Rank
from training.loop import Evaluation

log = logging.getLogger("train")


class RayBatches:
    """Endless stream of training ray batches; its position (the datamanager's generators and the
    number of batches taken) is what a checkpoint stores as the data position."""

    def __init__(self, datamanager, accumulation: int = 1, rank: Rank = SINGLE):
        self.datamanager, self.accumulation, self.rank = datamanager, max(int(accumulation), 1), rank
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        rays, batch = self.datamanager.next_train(self.taken // self.accumulation)
        batch["step"] = self.taken // self.accumulation  # the optimizer step this batch belongs to
        self.taken += 1
        return rays, batch

    model = None  # set by the pipeline: the proposal sampler's update counter resumes with the data

    def state_dict(self) -> dict:
        """Every rank calls it (the checkpoint is a collective): with several ranks, each rank's ray
        stream is kept (`datamanager_ranks`), so a resume on as many ranks draws the same rays."""
        state = {"datamanager": self.datamanager.state_dict(), "taken": self.taken}
        if self.rank.distributed:
            state["datamanager_ranks"] = dist_lib.all_gather_objects(state["datamanager"])
        sampler = getattr(self.model, "proposal_sampler", None)
        if sampler is not None:  # proposal networks are updated every k-th step: keep the phase
            state["proposal_sampler"] = {"steps_since_update": int(sampler._steps_since_update),
                                         "step": int(sampler._step)}
        return state

    def load_state_dict(self, state: dict) -> None:
        streams = state.get("datamanager_ranks") or [state["datamanager"]]
        if self.rank.rank < len(streams):  # a rank the checkpoint has no stream for keeps its fresh one
            self.datamanager.load_state_dict(streams[self.rank.rank])
        self.taken = int(state["taken"])
        sampler = getattr(self.model, "proposal_sampler", None)
        if sampler is not None and "proposal_sampler" in state:
            sampler._steps_since_update = int(state["proposal_sampler"]["steps_since_update"])
            sampler._step = int(state["proposal_sampler"]["step"])


def scene_path(data_cfg: DictConfig) -> Path:
    """`data.data`, or the synthetic scene generated on first use when `data.scene` says how."""
    scene = data_cfg.get("scene")
    if scene is None:
        if data_cfg.data is None:
            raise ConfigError("data.data is not set: pass the scene folder, data.data=/path/to/scene "
                              "(or data=synthetic for the generated test scene)")
        return Path(data_cfg.data).expanduser()
    from data.nerf.synthetic import ensure_scene

    root = Path(data_cfg.data).expanduser() if data_cfg.data else None
    try:
        return ensure_scene(root, name=scene.name, format=scene.format, n_views=scene.n_views, size=scene.size,
                            fov_deg=scene.fov_deg, n_eval_views=scene.n_eval_views)
    except FileExistsError as e:
        raise ConfigError(f"data.scene: {e}") from None


def build_datamanager(data_cfg: DictConfig, device: torch.device, seed: int, test_mode: str = "val"):
    """`(scene folder, NerfDataManager)` of a `data` config: the scene (generated first for data=synthetic)
    read by the config's dataparser; a malformed scene is a SceneError, a wrong option a ConfigError.
    test_mode "test": the held-out views are the dataparser's test split (ns-eval), else its val split."""
    root = scene_path(data_cfg)
    kwargs = OmegaConf.to_container(data_cfg, resolve=True)
    kwargs.pop("scene", None)
    kwargs["data"] = str(root)
    try:
        return root, instantiate(kwargs, device=device, seed=seed, test_mode=test_mode, _convert_="all")
    except InstantiationException as e:  # a wrong dataparser key or value, a malformed scene
        cause = e.__cause__
        if isinstance(cause, SceneError):
            raise cause from None
        raise ConfigError(f"data: {cause or e}") from e


class NerfPipeline:
    family = "nerf"

    def __init__(self, cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank: Rank = SINGLE,
                 test_mode: str = "val"):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.scene_root, self.datamanager = build_datamanager(cfg.data, device, cfg.machine.seed + 2 * rank.rank,
                                                              test_mode)
        dm = self.datamanager
        self.batches = RayBatches(dm, cfg.gradient_accumulation_steps, rank)
        try:
            self.model = instantiate(cfg.model, num_train_cameras=dm.num_train_images, scene_box=dm.scene_box,
                                     _convert_="all").to(device)
        except InstantiationException as e:
            raise ConfigError(f"model: {e.__cause__ or e}") from e
        self.batches.model = self.model
        if getattr(self.model, "needs_depth", False) and not dm.has_depth:
            raise ConfigError(f"model.depth_loss_mult={cfg.model.depth_loss_mult} needs depth maps, but the frames of "
                              f"{self.scene_root} have no depth_file_path (nerfstudio's depth-nerfacto would estimate "
                              "them with ZoeDepth from torch.hub, which is not done here); add depth files or set "
                              "model.depth_loss_mult=0")
        self.lpips = None  # loaded now: a wrong eval.lpips_weights stops the run before training
        if cfg.eval.lpips_weights:
            from models.fields.lpips import load_lpips

            self.lpips = load_lpips(cfg.eval.lpips_weights, device)

    # ------------------------------------------------------------------ loop hooks
    def resolved_config(self, cfg: DictConfig) -> DictConfig:
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        out.data.data = str(self.scene_root)
        return out

    def write_run_files(self, run_dir: Path) -> None:
        """nerfstudio's <run>/dataparser_transforms.json: the transform and scale from the data's original
        frame to the one the model is trained in (applied_transform and applied_scale included)."""
        self.datamanager.train_outputs.save_dataparser_transform(Path(run_dir) / "dataparser_transforms.json")

    def derived_params(self, cfg: DictConfig) -> dict:
        dm = self.datamanager
        return {"scene_root": str(self.scene_root), "num_train_cameras": dm.num_train_images,
                "num_eval_cameras": dm.num_eval_images, "rays_per_batch": cfg.data.train_num_rays_per_batch,
                "scene_box": [[round(float(v), 4) for v in row] for row in dm.scene_box.tolist()],
                "num_params": sum(p.numel() for p in self.model.parameters()), "device": str(self.device)}

    def optim_params(self) -> dict:
        return self.model.get_param_groups()

    def samples_per_step(self, loop) -> int:
        return self.cfg.data.train_num_rays_per_batch * loop.gradient_accumulation_steps

    def to_device(self, batch):
        return batch  # the datamanager builds rays and colours on the training device

    def loss(self, model: torch.nn.Module, batch):
        """`model` is nerfacto, or its DistributedDataParallel wrapper, whose forward the model's loss
        calls so that the gradients are averaged over the ranks."""
        rays, data = batch
        inner = getattr(model, "module", model)
        targets = {"image": data["rgb"], "indices": data["indices"]}
        if "depth_image" in data:
            targets["depth_image"] = data["depth_image"]
        return inner.loss(rays, targets, data["step"], forward=model)

    def warm_started(self, step: int) -> None:
        """A warm start continues at the source run's step: the batches carry it to nerfacto's
        step-dependent schedules (proposal warm-up and updates, weight annealing)."""
        self.batches.taken = step * self.batches.accumulation

    def viewer_scene(self):
        """What the live viewer shows (viewer/, viewer=web): the training cameras with their images at the poses
        pose refinement gives them, and the model's colour, depth and accumulation."""
        from viewer.scene import ViewerScene

        split = self.datamanager.train_split

        def image(i: int) -> np.ndarray:
            h, w = (int(v) for v in split.sizes[i])
            return split.images[i, :h, :w].cpu().numpy()

        center = self.datamanager.scene_box.float().mean(0).cpu().numpy()
        cameras = self.datamanager.train_cameras
        refinement = getattr(self.model, "camera_optimizer", None)  # the model's pose refinement, if it has one
        refined_poses = None
        if refinement is not None and refinement.refines:
            @torch.no_grad()
            def refined_poses(indices: torch.Tensor) -> torch.Tensor:
                return refinement.corrected_poses(cameras.camera_to_worlds[indices], indices)

        return ViewerScene(cameras=cameras, image=image, model=self.model, outputs=("rgb", "depth", "accumulation"),
                           center=center, refined_poses=refined_poses)

    # ------------------------------------------------------------------ evaluation
    def evaluations(self) -> list[Evaluation]:
        """nerfstudio's three cadences (eval.steps_per_eval_*); the all-images one is the run's result."""
        ev = self.cfg.eval
        return [Evaluation("eval_batch", ev.steps_per_eval_batch, self.evaluate_batch),
                Evaluation("eval_image", ev.steps_per_eval_image, self.evaluate_image),
                Evaluation("eval", ev.steps_per_eval_all_images, self.evaluate, final=True)]

    def at_step(self, step: int) -> None:
        """The model as it renders after `step` optimizer steps: eval mode, and its step-dependent state
        (nerfacto's proposal weight annealing) set from the step, so that a render depends on the
        weights and the step alone: the in-training evaluation, eval.py and render.py of one checkpoint
        compute the same images."""
        self.model.eval()
        set_step = getattr(self.model, "set_step", None)
        if set_step is not None:
            set_step(step)

    def _check_eval_split(self) -> None:
        if self.datamanager.num_eval_images == 0:
            raise ConfigError("no eval images: the eval split is empty; hold views out with "
                              "data.dataparser.eval_mode / train_split_fraction / eval_interval")

    @torch.no_grad()
    def evaluate_batch(self, run_dir: Path, step: int) -> tuple[dict, list[Path]]:
        """Loss and PSNR on one random batch of held-out rays (nerfstudio's eval batch)."""
        self._check_eval_split()
        self.at_step(step)
        rays, batch = self.datamanager.next_eval(step)
        outputs = self.model.render_image(rays, self.cfg.eval.chunk)
        metrics = {k: float(v) for k, v in self.model.get_loss_dict(outputs, {"image": batch["rgb"]}).items()}
        metrics["loss"] = sum(metrics.values())
        metrics["psnr"] = psnr(outputs["rgb"].clamp(0, 1), self.model.composite_ground_truth(batch["rgb"]))
        return metrics, []

    @torch.no_grad()
    def evaluate_image(self, run_dir: Path, step: int) -> tuple[dict, list[Path]]:
        """One whole held-out image, the next of data.eval_image_indices (nerfstudio's eval image):
        PSNR, SSIM (LPIPS with weights) and its `ground truth | render | depth` PNG."""
        self._check_eval_split()
        if not self.datamanager.eval_image_indices:
            raise ConfigError("data.eval_image_indices=[] leaves nothing for the image eval; list held-out views "
                              "or set eval.steps_per_eval_image=0")
        self.at_step(step)
        i, rays, batch = self.datamanager.next_eval_image(step)
        gt = self.model.composite_ground_truth(batch["image"])
        rgb, depth, _ = self._render_view(rays, *gt.shape[:2])
        metrics = {**self._image_metrics(rgb, gt), "image_idx": i}
        artifacts = []
        if self.cfg.eval.save_images:
            out_dir = Path(run_dir) / "eval" / f"step_{step:06d}"
            out_dir.mkdir(parents=True, exist_ok=True)
            artifacts.append(out_dir / f"eval_image_{i:04d}.png")
            _save_triptych(artifacts[-1], gt, rgb, depth)
        return metrics, artifacts

    @torch.no_grad()
    def evaluate(self, run_dir: Path, step: int, out_dir: Path | None = None) -> tuple[dict, list[Path]]:
        """All held-out views (at most eval.num_images), as nerfstudio's all-images eval and ns-eval:
        mean and std over the views of PSNR, SSIM (LPIPS with weights), rays/s and frames/s. Images and
        eval_info.json go to `out_dir` (default `<run_dir>/eval/step_<N>`, where eval.py gives its own)."""
        ev = self.cfg.eval
        self._check_eval_split()
        indices = list(range(self.datamanager.num_eval_images))[: ev.num_images]
        self.at_step(step)
        out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval" / f"step_{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        per_image, artifacts = [], []
        for n, i in enumerate(indices):
            rays, batch = self.datamanager.eval_image(i)
            gt = self.model.composite_ground_truth(batch["image"])
            h, w = gt.shape[:2]
            rgb, depth, seconds = self._render_view(rays, h, w)
            per_image.append({"image": i, **self._image_metrics(rgb, gt),
                              "num_rays_per_sec": h * w / seconds, "fps": 1.0 / seconds})
            if ev.save_images and n < ev.max_images_saved:
                artifacts.append(out_dir / f"eval_{i:04d}.png")
                _save_triptych(artifacts[-1], gt, rgb, depth)
        metrics = {}
        for key in per_image[0]:
            if key == "image":
                continue
            values = np.array([m[key] for m in per_image], dtype=np.float64)
            metrics[key] = float(values.mean())
            if key in ("psnr", "ssim", "lpips"):  # nerfstudio's std: over the views, Bessel-corrected
                metrics[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        metrics["num_images"] = len(per_image)
        lpips_note = self.lpips_status()
        (out_dir / "eval_info.json").write_text(json.dumps({"per_image": per_image, "lpips": lpips_note}, indent=1))
        artifacts.append(out_dir / "eval_info.json")
        if ev.orbit_frames:
            artifacts.append(self.render_orbit(out_dir / "orbit.mp4", ev.orbit_frames))
        return metrics, artifacts

    def render_orbit(self, path: Path, frames: int) -> Path:
        """An mp4 circling the scene at the training cameras' height and distance (render.py's orbit)."""
        from rendering.camera_paths import orbit
        from rendering.run import render_frames, write

        cams = orbit(self.datamanager.train_cameras, frames).to(self.device)
        images = render_frames(self.model, cams, ["rgb"], self.cfg.eval.chunk)
        return write(images, path, "video", 24)

    def _render_view(self, rays, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """rgb (h, w, 3) in [0, 1], depth (h, w) and the seconds the render took."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        outputs = self.model.render_image(rays, self.cfg.eval.chunk)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return outputs["rgb"].view(h, w, 3).clamp(0, 1), outputs["depth"].view(h, w), seconds

    def _image_metrics(self, rgb: torch.Tensor, gt: torch.Tensor) -> dict:
        metrics = {"psnr": psnr(rgb, gt), "ssim": ssim(rgb, gt)}
        if self.lpips is not None:
            metrics["lpips"] = self.lpips.score(rgb, gt)
        return metrics

    def lpips_status(self) -> str:
        """What eval_info.json says about LPIPS: computed only from local weights (never downloaded)."""
        if self.lpips is None:
            return "not computed: set eval.lpips_weights to local LPIPS (AlexNet) weights, see models/fields/lpips.py"
        return f"computed: AlexNet LPIPS v0.1 with weights from {self.cfg.eval.lpips_weights}"


def _save_triptych(path: Path, gt: torch.Tensor, rgb: torch.Tensor, depth: torch.Tensor) -> None:
    from PIL import Image

    d = depth.float()
    d = (d - d.min()) / (d.max() - d.min()).clamp_min(1e-8)
    panels = [gt.float().cpu(), rgb.float().cpu(), d[..., None].expand(*d.shape, 3).cpu()]
    img = torch.cat(panels, dim=1).numpy()
    Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)).save(path)
