"""Neural fields: scene (dataparser) -> ray batches (datamanager) -> nerfacto -> held-out views.

The same loop as the robot family trains it: a batch is one `next_train()` of the datamanager
(a RayBundle and its pixels' colours); the model's step-dependent schedules (proposal sampler
updates, weight annealing) get the optimizer step from the batch stream's own position, so they
resume with it. Evaluation renders the eval images and reports PSNR and SSIM (LPIPS only with
local weights); the first images are saved as `ground truth | render | depth` PNGs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from config.errors import ConfigError
from data.nerf.dataparsers import SceneError
from models.fields.metrics import psnr, ssim
from training.distributed import SINGLE, Rank

log = logging.getLogger("train")


class RayBatches:
    """Endless stream of training ray batches; its position (the datamanager's generators and the
    number of batches taken) is what a checkpoint stores as the data position."""

    def __init__(self, datamanager, accumulation: int = 1):
        self.datamanager, self.accumulation = datamanager, max(int(accumulation), 1)
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
        state = {"datamanager": self.datamanager.state_dict(), "taken": self.taken}
        sampler = getattr(self.model, "proposal_sampler", None)
        if sampler is not None:  # proposal networks are updated every k-th step: keep the phase
            state["proposal_sampler"] = {"steps_since_update": int(sampler._steps_since_update),
                                         "step": int(sampler._step)}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.datamanager.load_state_dict(state["datamanager"])
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
    return ensure_scene(root, name=scene.name, format=scene.format, n_views=scene.n_views, size=scene.size,
                        fov_deg=scene.fov_deg, n_eval_views=scene.n_eval_views)


class NerfPipeline:
    family = "nerf"

    def __init__(self, cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank: Rank = SINGLE):
        self.cfg, self.device, self.rank = cfg, device, rank
        if rank.distributed:
            raise ConfigError("neural fields train on one device here (machine.num_devices=1)")
        self.scene_root = scene_path(cfg.data)
        kwargs = OmegaConf.to_container(cfg.data, resolve=True)
        kwargs.pop("scene", None)
        kwargs["data"] = str(self.scene_root)
        try:
            self.datamanager = instantiate(kwargs, device=device, seed=cfg.machine.seed, _convert_="all")
        except InstantiationException as e:  # a wrong dataparser key or value, a malformed scene
            cause = e.__cause__
            if isinstance(cause, SceneError):
                raise cause from None
            raise ConfigError(f"data: {cause or e}") from e
        dm = self.datamanager
        self.batches = RayBatches(dm, cfg.gradient_accumulation_steps)
        try:
            self.model = instantiate(cfg.model, num_train_cameras=dm.num_train_images, scene_box=dm.scene_box,
                                     _convert_="all").to(device)
        except InstantiationException as e:
            raise ConfigError(f"model: {e.__cause__ or e}") from e
        self.batches.model = self.model

    # ------------------------------------------------------------------ loop hooks
    def resolved_config(self, cfg: DictConfig) -> DictConfig:
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        out.data.data = str(self.scene_root)
        return out

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
        rays, data = batch
        model = getattr(model, "module", model)
        return model.loss(rays, {"image": data["rgb"], "indices": data["indices"]}, data["step"])

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, run_dir: Path, step: int) -> tuple[dict, list[Path]]:
        ev = self.cfg.eval
        dm = self.datamanager
        indices = list(dm.eval_image_indices)
        if ev.num_images is not None:
            indices = indices[: ev.num_images]
        if not indices:
            raise ConfigError("no eval images: the eval split is empty or data.eval_image_indices=[]")
        self.model.eval()
        out_dir = Path(run_dir) / "eval" / f"step_{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        per_image, artifacts = [], []
        for n, i in enumerate(indices):
            rays, batch = dm.eval_image(i)
            gt = batch["image"]
            h, w = gt.shape[:2]
            outputs = self.model.render_image(rays, ev.chunk)
            rgb = outputs["rgb"].view(h, w, 3).clamp(0, 1)
            per_image.append({"image": i, "psnr": psnr(rgb, gt), "ssim": ssim(rgb, gt)})
            if ev.save_images and n < ev.max_images_saved:
                path = out_dir / f"eval_{i:04d}.png"
                _save_triptych(path, gt, rgb, outputs["depth"].view(h, w))
                artifacts.append(path)
        metrics = {k: float(np.mean([m[k] for m in per_image])) for k in ("psnr", "ssim")}
        metrics["num_images"] = len(per_image)
        lpips_note = self._lpips_status()
        (out_dir / "eval_info.json").write_text(json.dumps({"per_image": per_image, "lpips": lpips_note}, indent=1))
        artifacts.append(out_dir / "eval_info.json")
        return metrics, artifacts

    def _lpips_status(self) -> str:
        """LPIPS needs trained AlexNet/VGG weights that this project cannot download; it is reported
        as unavailable rather than estimated."""
        weights = self.cfg.eval.lpips_weights
        if not weights:
            return "unavailable: set eval.lpips_weights to a local LPIPS weights file"
        if not Path(weights).expanduser().is_file():
            return f"unavailable: {weights} does not exist"
        return f"unavailable: weights found at {weights}, but no LPIPS network is implemented yet"


def _save_triptych(path: Path, gt: torch.Tensor, rgb: torch.Tensor, depth: torch.Tensor) -> None:
    from PIL import Image

    d = depth.float()
    d = (d - d.min()) / (d.max() - d.min()).clamp_min(1e-8)
    panels = [gt.float().cpu(), rgb.float().cpu(), d[..., None].expand(*d.shape, 3).cpu()]
    img = torch.cat(panels, dim=1).numpy()
    Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)).save(path)
