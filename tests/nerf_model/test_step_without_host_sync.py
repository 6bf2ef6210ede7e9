"""A nerfacto training step on a GPU queues its work without waiting for it: the loss's logged values and the
grouped optimizer's clipped gradient norm stay on the device (the loop reads them every log_freq steps), so
the CPU launches the next kernels while the GPU runs the last ones."""

from __future__ import annotations

import pytest
import torch

TINY = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic",
        "logger=none", "machine.device_type=cuda", "data.scene.name=sync16", "data.scene.n_views=4",
        "data.scene.size=16", "data.train_num_rays_per_batch=64", "model.num_levels=2", "model.base_res=8",
        "model.max_res=16", "model.log2_hashmap_size=8", "model.hidden_dim=8", "model.hidden_dim_color=8",
        "model.camera_optimizer.mode=SO3xR3", "use_amp=false", "seed=3"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the check is that no host sync occurs")
@pytest.mark.parametrize("images_on_gpu", [False, True])
def test_a_nerfacto_step_never_waits_for_the_device(compose, tmp_path, monkeypatch, images_on_gpu):
    from pipelines.nerf import NerfPipeline
    from training.optim import build_optimizer

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    cfg = compose(TINY + [f"data.images_on_gpu={str(images_on_gpu).lower()}"])
    pipe = NerfPipeline(cfg, torch.device("cuda"))
    optimizer, _ = build_optimizer(cfg.optimizer, pipe.model.get_param_groups())
    batches = iter(pipe.batches)
    pipe.model.train()
    for step in range(3):  # the first steps build what is built once (the proposal sampler's schedule, caches)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if step == 2 else "default")
        try:
            batch = pipe.to_device(next(batches))
            loss, logs = pipe.loss(pipe.model, batch)
            loss.backward()
            grad_norm = optimizer.clip_grad_norms()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and float(grad_norm) > 0
    assert {"rgb_loss", "psnr"} <= set(logs) and all(v.device.type == "cuda" for v in logs.values())
