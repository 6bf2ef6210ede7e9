"""use_amp reaches the policy's evaluation and its online rollouts (LeRobot evaluates under autocast when
policy.use_amp is set): the robot pipeline hands the run's autocast dtype to evaluate_policy and to the
rollout settings, and nothing when AMP is off."""

from __future__ import annotations

import pytest
import torch

from helpers import TINY_POLICY
from pipelines.robot import RobotPipeline

ONLINE = ["online.steps=4", "online.steps_between_rollouts=2", "online.rollout_n_episodes=2",
          "online.rollout_batch_size=2", "online.buffer_capacity=30", "env.episode_length=10"]


@pytest.mark.parametrize("amp, expected", [([], None), (["use_amp=true"], torch.bfloat16),
                                           (["use_amp=true", "amp_dtype=fp16"], torch.float16)])
def test_evaluation_and_rollouts_run_under_the_runs_autocast(compose, pusht_root, tmp_path, monkeypatch, amp,
                                                             expected):
    import envs.evaluate

    cfg = compose(["experiment=quickstart", *TINY_POLICY, "logger=none", "machine.device_type=cpu",
                   f"dataset.root={pusht_root}", "num_workers=0", "steps=2", *ONLINE, *amp])
    pipeline = RobotPipeline(cfg, torch.device("cpu"))
    assert pipeline.online.settings.amp_dtype == expected
    seen = {}

    def fake_evaluate(policy, env_cfg, **kwargs):
        seen.update(kwargs)
        return {"aggregated": {"pc_success": 0.0}, "per_episode": [], "videos": []}

    monkeypatch.setattr(envs.evaluate, "evaluate_policy", fake_evaluate)
    pipeline.evaluate(tmp_path, 0)
    assert seen["amp_dtype"] == expected
