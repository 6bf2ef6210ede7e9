"""NerfactoModel: proposal-sampled hash-grid NeRF (nerfstudio's nerfacto), as one nn.Module.

Built by `hydra.utils.instantiate(cfg.model, num_train_cameras=..., scene_box=...)`.
Training step protocol: `model.train(); total, logs = model.loss(ray_bundle, batch, step)`
(`loss` calls `step_callback(step)` itself when the caller has not), backward, optimizer steps on
`get_param_groups()`. Evaluation: `model.eval(); model.render_image(ray_bundle)`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from config.errors import ConfigError
from data.nerf.rays import RayBundle
from models.fields import losses as L
from models.fields.camera_optimizer import CameraOptimizer
from models.fields.colliders import NearFarCollider
from models.fields.contraction import SceneContraction
from models.fields.renderers import RGBRenderer, render_accumulation, render_depth, render_normals
from models.fields.samplers import (ProposalNetworkSampler, UniformLinDispPiecewiseSampler, UniformSampler,
                                    proposal_update_schedule)
from models.nerfacto.config import NerfactoConfig
from models.nerfacto.field import HashMLPDensityField, NerfactoField

DEFAULT_CAMERA_OPTIMIZER = {"mode": "SO3xR3"}  # the seed's --pipeline.datamanager.camera-optimizer.mode


def _scale_gradients_by_distance_squared(outputs: dict, ray_samples) -> dict:
    """Same values; gradients scaled by min(1, t^2) (t = sample distance): less for close points."""
    scaling = torch.square(ray_samples.midpoints).clamp(0, 1)
    return {k: v * scaling + (v * (1 - scaling)).detach() for k, v in outputs.items()}


class NerfactoModel(nn.Module):
    # Between proposal updates the proposal networks run without gradients (ProposalNetworkSampler), so
    # DistributedDataParallel must look for parameters a step left unused (nerfstudio does the same).
    ddp_find_unused_parameters = True

    def __init__(self, num_train_cameras: int, scene_box: torch.Tensor | None = None,
                 camera_optimizer: Mapping[str, Any] | None = None, **config_kwargs):
        """camera_optimizer: CameraOptimizer kwargs (mode off|SO3xR3|SE3, position_noise_std, ...);
        nerfstudio keeps them under --pipeline.datamanager.camera-optimizer.*; default mode SO3xR3."""
        super().__init__()
        config_kwargs.pop("_target_", None)
        self.config = cfg = NerfactoConfig(**config_kwargs)
        self.num_train_cameras = num_train_cameras
        aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]) if scene_box is None else \
            torch.as_tensor(scene_box, dtype=torch.float32)
        if tuple(aabb.shape) != (2, 3):
            raise ConfigError(f"scene_box must be a (2, 3) tensor of min/max corners, got shape {tuple(aabb.shape)}")
        self.register_buffer("aabb", aabb.clone(), persistent=False)
        contraction = None if cfg.disable_scene_contraction else SceneContraction(order=math.inf)
        impl = cfg.implementation

        self.field = NerfactoField(
            aabb, num_images=num_train_cameras, hidden_dim=cfg.hidden_dim, num_levels=cfg.num_levels,
            base_res=cfg.base_res, max_res=cfg.max_res, log2_hashmap_size=cfg.log2_hashmap_size,
            features_per_level=cfg.features_per_level, hidden_dim_color=cfg.hidden_dim_color,
            appearance_embedding_dim=cfg.appearance_embed_dim,
            use_average_appearance_embedding=cfg.use_average_appearance_embedding,
            spatial_distortion=contraction, predict_normals=cfg.predict_normals,
            hidden_dim_pred_normals=cfg.hidden_dim_transient, average_init_density=cfg.average_init_density,
            implementation=impl, hash_layout=cfg.hash_layout, hash_table_dtype=cfg.hash_table_dtype)
        cam_kwargs = dict(DEFAULT_CAMERA_OPTIMIZER if camera_optimizer is None else camera_optimizer)
        self.camera_optimizer = CameraOptimizer(num_train_cameras, **cam_kwargs)

        def prop_net(args):
            return HashMLPDensityField(aabb, spatial_distortion=contraction, hidden_dim=args.hidden_dim,
                                       log2_hashmap_size=args.log2_hashmap_size, num_levels=args.num_levels,
                                       max_res=args.max_res, use_linear=args.use_linear,
                                       base_res=16, features_per_level=2,
                                       average_init_density=cfg.average_init_density, implementation=impl,
                                       hash_layout=cfg.hash_layout, hash_table_dtype=cfg.hash_table_dtype)

        n_prop = cfg.num_proposal_iterations
        if cfg.use_same_proposal_network:
            self.proposal_networks = nn.ModuleList([prop_net(cfg.proposal_net_args_list[0])])
            self._prop_index = [0] * n_prop
        else:
            self.proposal_networks = nn.ModuleList([prop_net(cfg.proposal_net_args_list[i]) for i in range(n_prop)])
            self._prop_index = list(range(n_prop))

        initial = (UniformSampler if cfg.proposal_initial_sampler == "uniform" else UniformLinDispPiecewiseSampler)(
            single_jitter=cfg.use_single_jitter)
        self.proposal_sampler = ProposalNetworkSampler(
            num_proposal_samples_per_ray=cfg.num_proposal_samples_per_ray,
            num_nerf_samples_per_ray=cfg.num_nerf_samples_per_ray, num_proposal_network_iterations=n_prop,
            single_jitter=cfg.use_single_jitter, initial_sampler=initial,
            update_sched=proposal_update_schedule(cfg.proposal_warmup, cfg.proposal_update_every))
        # nerfacto replaces the base model's NearFarCollider(**collider_params) by this one
        self.collider = NearFarCollider(cfg.near_plane, cfg.far_plane) if cfg.enable_collider else None
        self.renderer_rgb = RGBRenderer(cfg.background_color)
        self._callback_step: int | None = None
        self._schedule_driven = False  # graph_variant runs the schedules: loss leaves them alone

    def describe_parameter(self, name: str, saved: tuple[int, ...], here: tuple[int, ...]) -> str | None:
        """What a parameter's shape depends on, for a checkpoint whose shapes do not fit (warm starts)."""
        if name.startswith("field.embedding_appearance.") and saved[1:] == here[1:]:
            return (f"nerfacto's appearance embedding has one row per training image: the checkpoint's scene had "
                    f"{saved[0]} training images, this one has {here[0]}")
        if name.startswith("camera_optimizer.") and saved[1:] == here[1:]:
            return (f"the camera optimizer has one pose correction per training camera: {saved[0]} in the "
                    f"checkpoint, {here[0]} here")
        if name.startswith("field.embedding_appearance."):
            return "model.appearance_embed_dim differs"
        return None

    # ---- schedule -------------------------------------------------------------------------------
    @property
    def density_fns(self):
        return [self.proposal_networks[i] for i in self._prop_index]

    def step_callback(self, step: int) -> None:
        """Call before training step `step`: sets the weight annealing for it and advances the proposal
        update schedule past the previous step (nerfstudio's BEFORE/AFTER_TRAIN_ITERATION callbacks)."""
        if step > 0:
            self.proposal_sampler.step_cb(step - 1)
        self.proposal_sampler.let_forward_decide()  # graph_variant settles it after this, for a captured step
        self.set_step(step)
        self._callback_step = step

    @property
    def capturable_step(self) -> bool:
        """Whether machine.cuda_graph can capture this model's training step: not with the depth loss
        (its sigma is a host value of the step), predicted normals (a second autograd pass, untried) or
        tiny-cuda-nn (its memory arena synchronises the device when it grows, which a capture forbids)."""
        return not (self.needs_depth or self.config.predict_normals or self.config.implementation == "tcnn")

    @property
    def compile_blocker(self) -> str | None:
        """None where machine.compile=null has the Trainer compile this model when its step is captured
        (and a captured step may hold the compiled model): its step's hundreds of small elementwise and
        reduction kernels (samplers, renderer, losses) fuse, 1.75x the captured eager step's rays/s on an
        H100 (docs/NEURAL_FIELDS.md, "Compiled"). Otherwise why it is not compiled (refused under
        machine.compile=true)."""
        if self.config.predict_normals:
            return ("model.predict_normals=false: the normals' losses differentiate a gradient, which "
                    "torch.compile's autograd does not take")
        if self.config.implementation == "tcnn":
            return "model.implementation other than tcnn (tiny-cuda-nn's kernels under torch.compile were not tried)"
        return None

    def graph_variant(self, step: int) -> bool:
        """The host part of training step `step` when its device work is replayed from a CUDA graph
        (machine.cuda_graph): the schedules advance, the anneal is written to the device, and the
        proposal update is settled here. Returns the captured variant the step replays: with or
        without the proposal networks' gradients."""
        self._schedule_driven = True  # from now on, for this model's training: the loop runs the schedules
        self.step_callback(step)
        return self.proposal_sampler.decide_update()

    def set_step(self, step: int) -> None:
        """The proposal weight annealing of step `step`. It is a function of the step, not a weight, so
        every render of a checkpoint (in-training evaluation, eval.py, render.py) sets it from the step."""
        cfg = self.config
        if cfg.use_proposal_weight_anneal:
            frac = float(np.clip(step / cfg.proposal_weights_anneal_max_num_iters, 0, 1))
            b = cfg.proposal_weights_anneal_slope
            self.proposal_sampler.set_anneal(b * frac / ((b - 1) * frac + 1))

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, ray_bundle: RayBundle) -> dict[str, Any]:
        cfg = self.config
        if self.collider is not None:
            ray_bundle = self.collider(ray_bundle)
        elif ray_bundle.nears is None or ray_bundle.fars is None:
            raise ValueError("model.enable_collider=false needs rays that carry nears and fars")
        if self.training:
            ray_bundle = self.camera_optimizer.apply_to_raybundle(ray_bundle)
        ray_samples, weights_list, ray_samples_list = self.proposal_sampler(ray_bundle, self.density_fns)
        field_out = self.field(ray_samples, compute_normals=cfg.predict_normals)
        if cfg.use_gradient_scaling:
            field_out = _scale_gradients_by_distance_squared(field_out, ray_samples)
        weights = ray_samples.get_weights(field_out["density"])
        weights_list = weights_list + [weights]
        ray_samples_list = ray_samples_list + [ray_samples]
        outputs: dict[str, Any] = {
            "rgb": self.renderer_rgb(field_out["rgb"], weights),
            "accumulation": render_accumulation(weights),
            "expected_depth": render_depth(weights, ray_samples.starts, ray_samples.ends, "expected"),
            "weights_list": weights_list,
            "ray_samples_list": ray_samples_list,
        }
        if ray_bundle.directions_norm is not None:
            outputs["directions_norm"] = ray_bundle.directions_norm
        with torch.no_grad():
            outputs["depth"] = render_depth(weights, ray_samples.starts, ray_samples.ends, "median")
            for i in range(cfg.num_proposal_iterations):
                outputs[f"prop_depth_{i}"] = render_depth(weights_list[i], ray_samples_list[i].starts,
                                                          ray_samples_list[i].ends, "median")
        if cfg.predict_normals:
            normals, pred = field_out["normals"], field_out["pred_normals"]
            outputs["normals"] = render_normals(normals, weights)
            outputs["pred_normals"] = render_normals(pred, weights)
            outputs["rendered_orientation_loss"] = L.orientation_loss(weights.detach(), normals, ray_bundle.directions)
            outputs["rendered_pred_normal_loss"] = L.pred_normal_loss(weights.detach(), normals.detach(), pred)
        return outputs

    # ---- losses ---------------------------------------------------------------------------------
    def get_loss_dict(self, outputs: dict, batch: Mapping[str, torch.Tensor], step: int | None = None
                      ) -> dict[str, torch.Tensor]:
        """batch["image"]: (N, 3) or (N, 4) RGB(A) in [0, 1] for the rays of `outputs`."""
        cfg = self.config
        gt = batch["image"].to(outputs["rgb"].device, outputs["rgb"].dtype)
        pred, gt = self.renderer_rgb.blend_for_loss(outputs["rgb"], outputs["accumulation"], gt)
        loss_dict = {"rgb_loss": L.mse_loss(pred, gt)}
        if self.training:
            loss_dict["interlevel_loss"] = cfg.interlevel_loss_mult * L.interlevel_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
            loss_dict["distortion_loss"] = cfg.distortion_loss_mult * L.distortion_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
            if cfg.predict_normals:
                loss_dict["orientation_loss"] = cfg.orientation_loss_mult * outputs["rendered_orientation_loss"].mean()
                loss_dict["pred_normal_loss"] = cfg.pred_normal_loss_mult * outputs["rendered_pred_normal_loss"].mean()
            reg = self.camera_optimizer.regularizer()
            if reg is not None:
                loss_dict["camera_opt_regularizer"] = reg
            if self.needs_depth:
                loss_dict["depth_loss"] = cfg.depth_loss_mult * self._depth_loss(outputs, batch, step)
        return loss_dict

    @property
    def needs_depth(self) -> bool:
        """Whether training batches must carry "depth_image" (depth-nerfacto: model.depth_loss_mult > 0)."""
        return self.config.depth_loss_mult > 0

    def _depth_loss(self, outputs: dict, batch: Mapping[str, torch.Tensor], step: int | None) -> torch.Tensor:
        """depth-nerfacto's: the mean over sampling levels of the depth loss. sigma decays from
        starting_depth_sigma by sigma_decay_rate per training step down to depth_sigma when
        should_decay_sigma (nerfstudio decays it once per step, so after step s it is start * rate^(s+1))."""
        cfg = self.config
        if "depth_image" not in batch or "directions_norm" not in outputs:
            raise ValueError("model.depth_loss_mult > 0 needs batches with depth_image and rays with directions_norm")
        sigma = cfg.depth_sigma
        if cfg.should_decay_sigma:
            sigma = max(cfg.starting_depth_sigma * cfg.sigma_decay_rate ** ((step or 0) + 1), cfg.depth_sigma)
        depth = batch["depth_image"].to(outputs["expected_depth"])
        levels = len(outputs["weights_list"])
        return sum(L.depth_loss(w, rs, depth, outputs["expected_depth"], torch.tensor([sigma], device=depth.device),
                                outputs["directions_norm"], cfg.is_euclidean_depth, cfg.depth_loss_type)
                   for w, rs in zip(outputs["weights_list"], outputs["ray_samples_list"])) / levels

    def composite_ground_truth(self, image: torch.Tensor) -> torch.Tensor:
        """Ground truth as evaluated: an RGBA image composited on the background (nerfacto's
        blend_background: black for last_sample and random), RGB unchanged."""
        return self.renderer_rgb.blend_background(image)

    def loss(self, ray_bundle: RayBundle, batch: Mapping[str, torch.Tensor], step: int, forward=None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`forward`: what runs the model on the rays, when not the model itself (a
        DistributedDataParallel wrapper of it, which averages the gradients over the ranks)."""
        if self.training and not self._schedule_driven and self._callback_step != step:
            self.step_callback(step)
        outputs = (forward or self)(ray_bundle)
        loss_dict = self.get_loss_dict(outputs, batch, step)
        total = sum(loss_dict.values())
        logs = {k: v.detach() for k, v in loss_dict.items()}  # 0-d tensors: the loop reads them every log_freq steps
        logs["psnr"] = -10.0 * torch.log10(logs["rgb_loss"].float().clamp_min(1e-10))
        return total, logs

    # ---- optimisation / evaluation --------------------------------------------------------------
    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"proposal_networks": list(self.proposal_networks.parameters()),
                "fields": list(self.field.parameters()),
                "camera_opt": list(self.camera_optimizer.parameters())}

    @torch.no_grad()
    def render_image(self, ray_bundle: RayBundle, chunk: int | None = None) -> dict[str, torch.Tensor]:
        """All rays of an image (flattened (H*W, ...)) in chunks -> {name: (H*W, C)} tensor outputs.

        Call in eval mode (model.eval()): deterministic samples, average appearance code, no pose
        correction. Normals still need autograd inside (enabled locally by the field). Runs the eager
        forward even when machine.compile compiled the model: renders come in chunks and image sizes
        that vary (the viewer's above all), each of which would compile anew; compiling pays off for
        the training step, one batch shape replayed thousands of times."""
        chunk = chunk or self.config.eval_num_rays_per_chunk
        pieces: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(ray_bundle), chunk):
            out = self.forward(ray_bundle[start:start + chunk])
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.dim() == 2 and not k.startswith("rendered_"):
                    pieces.setdefault(k, []).append(v.detach())
        return {k: torch.cat(v, dim=0) for k, v in pieces.items()}
