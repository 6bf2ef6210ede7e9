"""`model=nerfacto` brings ns-train nerfacto's run-level defaults (its root options), not the robot family's."""

from __future__ import annotations

import pytest
import torch

NERFACTO = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic"]


def test_nerfacto_applies_the_seeds_run_level_defaults(compose):
    cfg = compose(NERFACTO)
    # --max-num-iterations 30000, --steps-per-save 2000, --logging.steps-per-log 10, --machine.seed 42
    assert (cfg.steps, cfg.save_freq, cfg.log_freq, cfg.seed, cfg.machine.seed) == (30000, 2000, 10, 42, 42)
    # --steps-per-eval-batch 500, --steps-per-eval-image 500, --steps-per-eval-all-images 25000
    assert (cfg.eval.steps_per_eval_batch, cfg.eval.steps_per_eval_image, cfg.eval.steps_per_eval_all_images) == (
        500, 500, 25000)
    assert (cfg.gradient_accumulation_steps, cfg.load_scheduler) == (1, True)
    robot = compose([])
    assert (robot.steps, robot.save_freq, robot.log_freq, robot.seed, robot.use_amp) == (100000, 20000, 200, 1000, False)


@pytest.mark.parametrize("device, amp", [("cuda", True), ("cpu", False), ("mps", False),
                                         ("auto", torch.cuda.is_available())])
def test_mixed_precision_is_on_by_default_where_it_pays(compose, device, amp):
    """--mixed-precision True, which nerfstudio switches off for CPU training (and bf16 on a CPU without
    native bf16 is slower than fp32); an explicit use_amp=true is kept anywhere."""
    cfg = compose([*NERFACTO, f"machine.device_type={device}"])
    assert cfg.use_amp is amp
    assert compose([*NERFACTO, f"machine.device_type={device}", "use_amp=true"]).use_amp is True


def test_command_line_values_beat_the_nerfacto_defaults(compose):
    cfg = compose([*NERFACTO, "steps=7", "save_freq=3", "log_freq=1", "seed=5", "use_amp=false"])
    assert (cfg.steps, cfg.save_freq, cfg.log_freq, cfg.seed, cfg.machine.seed, cfg.use_amp) == (7, 3, 1, 5, 5, False)


@pytest.mark.parametrize("n", [0, -1])
def test_eval_num_images_below_one_is_refused_by_its_range(compose, n):
    """Checked with every declared range (at compose time for train.py, on the loaded config for eval.py
    and render.py), before any scene is read or generated."""
    from config.errors import ConfigError
    from config.ranges import check_ranges

    cfg = compose([*NERFACTO, f"eval.num_images={n}"])
    with pytest.raises(ConfigError, match=f"eval.num_images={n} is out of range: must be >= 1"):
        check_ranges(cfg)
