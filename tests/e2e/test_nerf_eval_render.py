"""nerfacto after training: eval cadences, ns-eval-like eval.py, ns-render-like render.py, warm starts.

One tiny run (test_nerf_train's scene and model, 128 rays per batch, 120 steps) serves every test:
the camera_path.json test proves the frame convention by rendering training poses written in the
dataset's own frame (transforms.json) and matching the direct renders of those training views.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from e2e.test_nerf_train import TINY_NERF
from helpers import one_error_line, read_metrics, run_train

pytestmark = pytest.mark.slow

CADENCE = ["steps=120", "save_freq=60", "eval.steps_per_eval_batch=40", "eval.steps_per_eval_image=60",
           "eval.steps_per_eval_all_images=120", "data.train_num_rays_per_batch=128"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {"HYDRABOT_HOME": str(tmp_path_factory.mktemp("hydrabot_home"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory, env):
    run = tmp_path_factory.mktemp("nerf") / "run"
    r = run_train([*TINY_NERF, *CADENCE, f"hydra.run.dir={run}"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_eval_cadences_run_at_their_steps(run):
    lines = read_metrics(run)
    steps = {name: [m["step"] for m in lines if f"{name}/psnr" in m] for name in ("eval_batch", "eval_image", "eval")}
    assert steps == {"eval_batch": [40, 80, 120], "eval_image": [60, 120], "eval": [120]}
    batch = next(m for m in lines if "eval_batch/loss" in m)
    assert math.isfinite(batch["eval_batch/loss"]) and batch["eval_batch/loss"] == batch["eval_batch/rgb_loss"]
    images = [m["eval_image/image_idx"] for m in lines if "eval_image/image_idx" in m]
    assert images == [0, 1]  # cycles through data.eval_image_indices
    assert (run / "eval" / "step_000060" / "eval_image_0000.png").is_file()
    final = [m for m in lines if "eval/psnr" in m][-1]
    assert final["eval/num_images"] == 4 and final["eval/psnr_std"] >= 0 and final["eval/fps"] > 0


def test_run_keeps_nerfstudios_dataparser_transforms_json(run, env):
    """<run>/dataparser_transforms.json maps the scene's own poses to the trained frame: through it the
    transforms.json poses are centred (mean position 0), scaled into the unit cube (max |t| = 1) and
    upright (mean camera up = +z), nerfstudio's defaults (up, poses, auto scale)."""
    saved = json.loads((run / "dataparser_transforms.json").read_text())
    transform, scale = np.asarray(saved["transform"]), saved["scale"]
    assert transform.shape == (3, 4) and 0 < scale < 1
    scene = Path(env["HYDRABOT_HOME"]) / "scenes" / "tiny32" / "transforms.json"
    poses = np.array([f["transform_matrix"] for f in json.loads(scene.read_text())["frames"]])
    mapped = np.einsum("ij,njk->nik", transform, poses)
    mapped[:, :, 3] *= scale
    np.testing.assert_allclose(mapped[:, :, 3].mean(0), 0, atol=1e-5)
    assert np.abs(mapped[:, :, 3]).max() == pytest.approx(1.0, abs=1e-5)
    up = mapped[:, :, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-5)


def test_eval_cli_and_eval_freq_belongs_to_robots(run, env, tmp_path):
    out = tmp_path / "metrics.json"
    r = run_train([f"checkpoint={run}/checkpoints/last", f"output_path={out}", "machine.device_type=cpu"],
                  script="eval.py", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["experiment_name"] == "nerfacto_synthetic" and report["method_name"] == "nerfacto"
    assert report["checkpoint"] == str((run / "checkpoints" / "000120").resolve())
    res = report["results"]
    assert {"psnr", "psnr_std", "ssim", "ssim_std", "num_rays_per_sec", "fps"} <= set(res)
    assert "lpips" not in res  # no weights: never estimated, and the report says so
    assert report["lpips_status"].startswith("not computed: set eval.lpips_weights")
    assert json.loads((run / "eval_only" / "step_000120" / "eval.json").read_text())["lpips_status"].startswith(
        "not computed")
    assert all(math.isfinite(res[k]) for k in ("psnr", "ssim", "psnr_std", "ssim_std"))
    trained = [m for m in read_metrics(run) if "eval/psnr" in m][-1]["eval/psnr"]
    assert abs(res["psnr"] - trained) < 1e-4  # the same views, the same weights
    line = one_error_line(run_train([f"checkpoint={run}", "eval.num_images=0", "machine.device_type=cpu"],
                                     script="eval.py", env=env))
    assert "eval.num_images=0 is out of range: must be >= 1" in line  # eval.py range-checks its overrides too

    line = one_error_line(run_train([*TINY_NERF, "steps=1", "eval_freq=1", f"hydra.run.dir={tmp_path / 'r'}"],
                                     env=env))
    assert "eval_freq=1 is out of range for a neural field: must be 0" in line and "eval.steps_per_eval_batch" in line


def test_render_orbit_writes_the_requested_video(run, env, tmp_path):
    import av

    out = tmp_path / "orbit.mp4"
    r = run_train([f"checkpoint={run}", "camera_path=orbit", "frames=5", "fps=10", f"output={out}",
                   "rendered_output_names=[rgb,depth]", "machine.device_type=cpu"], script="render.py", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.average_rate == 10
    assert len(frames) == 5 and frames[0].shape == (32, 64, 3)  # rgb | depth


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_camera_path_in_the_dataset_frame_renders_the_training_views(run, env, tmp_path, monkeypatch):
    from pipelines import load_checkpoint

    monkeypatch.setenv("HYDRABOT_HOME", env["HYDRABOT_HOME"])
    _, pipe, _, _, _ = load_checkpoint(str(run), {"machine.device_type": "cpu"})
    dm = pipe.datamanager
    scene = Path(dm.train_outputs.image_filenames[0]).parents[1]
    meta = json.loads((scene / "transforms.json").read_text())
    by_name = {Path(f["file_path"]).name: f for f in meta["frames"]}
    views = [0, 7, 14, 21]
    direct, gts = [], []
    pipe.model.eval()
    for i in views:
        rays, batch = dm.train_image(i)
        rgb = pipe.model.render_image(rays)["rgb"].view(32, 32, 3).clamp(0, 1)
        direct.append(rgb.numpy())
        gts.append(batch["image"].numpy())
    fov = math.degrees(2 * math.atan(meta["h"] / 2 / meta["fl_y"]))
    path = {"camera_type": "perspective", "render_height": meta["h"], "render_width": meta["w"], "fps": 4,
            "seconds": 1, "camera_path": [
                {"camera_to_world": np.asarray(by_name[Path(dm.train_outputs.image_filenames[i]).name]
                                               ["transform_matrix"]).reshape(-1).tolist(),
                 "fov": fov, "aspect": meta["w"] / meta["h"]} for i in views]}
    (tmp_path / "train_views.json").write_text(json.dumps(path))

    def render(frame: str) -> list[np.ndarray]:
        out = tmp_path / frame
        r = run_train([f"checkpoint={run}", f"camera_path={tmp_path / 'train_views.json'}", "output_format=images",
                       f"output={out}", f"camera_path_frame={frame}", "machine.device_type=cpu"],
                      script="render.py", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return [np.asarray(Image.open(out / f"{k:05d}.png")) / 255.0 for k in range(len(views))]

    rendered = render("original")
    model_psnr = np.mean([_psnr(d, g) for d, g in zip(direct, gts)])
    path_psnr = np.mean([_psnr(p, g) for p, g in zip(rendered, gts)])
    assert abs(path_psnr - model_psnr) < 0.2, (path_psnr, model_psnr)
    assert min(_psnr(p, d) for p, d in zip(rendered, direct)) > 35  # the same views, up to 8-bit rounding
    # the same poses taken as already normalised land elsewhere
    wrong = render("dataparser")
    assert np.mean([_psnr(w, g) for w, g in zip(wrong, gts)]) < model_psnr - 2


def test_warm_start_loads_the_source_checkpoint(run, env, tmp_path, monkeypatch):
    from pipelines import build_pipeline
    from tracking.base import NullTracker
    from training import checkpoint as ck
    from training.loop import Trainer
    from training.run import loop_config

    monkeypatch.setenv("HYDRABOT_HOME", env["HYDRABOT_HOME"])
    source = run / "checkpoints" / "000060"
    cfg, _ = ck.load_checked_config(source)  # as data onto conf/'s own targets and schemas
    pipe = build_pipeline(cfg, torch.device("cpu"))
    trainer = Trainer(loop_config(cfg), pipe, cfg.optimizer, cfg.scheduler, NullTracker(), tmp_path,
                      torch.device("cpu"), "")
    trainer.warm_start(source)
    saved = load_file(str(source / "model.safetensors"))
    state = pipe.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert trainer.step == 60 and pipe.batches.taken == 60
    saved_opt = torch.load(source / "training_state.pt", weights_only=True)["optimizer"]["fields"]["state"][0]
    assert torch.equal(trainer.optimizer.optimizers["fields"].state_dict()["state"][0]["exp_avg"],
                       saved_opt["exp_avg"])

    # through train.py: a new run directory that continues from step 60 (seed flags translated)
    new = tmp_path / "warm"
    r = run_train([*TINY_NERF, *CADENCE, "steps=80", "save_freq=20", "--load-dir", str(run), "--load-step", "60",
                   f"hydra.run.dir={new}"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "load_dir=" in r.stderr and f"warm start from {source}" in r.stdout + r.stderr
    assert sorted(p.name for p in (new / "checkpoints").iterdir()) == ["000080", "last"]
    assert torch.load(new / "checkpoints" / "000080" / "training_state.pt", weights_only=True)["step"] == 80


def test_warm_start_from_a_missing_or_corrupt_checkpoint_is_one_line(run, env, tmp_path):
    new = tmp_path / "new"
    line = one_error_line(run_train([*TINY_NERF, f"load_dir={tmp_path / 'nope'}", f"hydra.run.dir={new}"], env=env))
    assert str(tmp_path / "nope") in line and "load_dir" in line
    line = one_error_line(run_train([*TINY_NERF, f"load_dir={run}", "load_step=7", f"hydra.run.dir={new}"], env=env))
    assert "no checkpoint of step 7" in line and "[60, 120]" in line
    broken = tmp_path / "broken"
    shutil.copytree(run / "checkpoints" / "000060", broken)
    (broken / "training_state.pt").write_bytes((broken / "training_state.pt").read_bytes()[:100])
    line = one_error_line(run_train([*TINY_NERF, f"load_checkpoint={broken}", f"hydra.run.dir={new}"], env=env))
    assert f"{broken} is damaged ({broken / 'training_state.pt'} is 100 bytes where" in line  # its manifest
    (broken / "manifest.json").unlink()  # as written before manifests: reading it is what fails
    line = one_error_line(run_train([*TINY_NERF, f"load_checkpoint={broken}", f"hydra.run.dir={new}"], env=env))
    assert str(broken / "training_state.pt") in line and "corrupt" in line
    line = one_error_line(run_train([*TINY_NERF, f"load_dir={run}", "resume=true", f"hydra.run.dir={new}"], env=env))
    assert "keep one of them" in line
    assert not new.exists()


def test_load_config_starts_a_new_run_with_the_saved_config(run, env, tmp_path):
    """--load-config <run>/config.yaml (nerfstudio's): the new run's config is the saved one (steps=0 on top)."""
    import yaml

    new = tmp_path / "loaded"
    r = run_train(["--load-config", str(run / "config.yaml"), "steps=0", "logger=none", f"hydra.run.dir={new}"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--load-config" in r.stderr and "translated: python src/train.py" in r.stderr
    saved, loaded = (yaml.safe_load((d / "config.yaml").read_text()) for d in (run, new))
    assert loaded.pop("steps") == 0 and saved.pop("steps") == 120
    assert loaded == saved
    assert [m for m in read_metrics(new) if "eval/psnr" in m]  # steps=0: the all-images eval alone


def test_warm_start_onto_a_scene_with_other_image_counts_is_one_line(run, env, tmp_path):
    """The source run trained on 28 images (every 8th of 32 held out); every 4th held out leaves 24."""
    line = one_error_line(run_train([*TINY_NERF, "data.dataparser.eval_interval=4", f"load_dir={run}", "steps=130",
                                      f"hydra.run.dir={tmp_path / 'other'}"], env=env))
    assert "its shapes do not fit this run's model" in line and "corrupt" not in line
    assert "field.embedding_appearance.embedding.weight is [28, 4] there and [24, 4] here" in line
    assert "the checkpoint's scene had 28 training images, this one has 24" in line
