"""Seed-flag translation: every option of both reference `--help` texts, value syntax, Hydra passthrough,
errors, our own keys in flag form, and docs/FLAGS.md against its generator."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cli import flag_table, seed_flags
from cli.seed_flags import (LEROBOT, LOAD_CONFIG_FLAG, NERFSTUDIO, PRESET_FLAG, SEED_FLAGS, VIS_FLAG, names_nerfacto,
                            rule_for, translate_argv)

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds"  # CI and developers have shared/ beside the clone
LEROBOT_HELP = SEEDS / "004_828acb93a7b41b9b.txt"
NERFSTUDIO_HELP = SEEDS / "000_4dc30611ef88277c.txt"
needs_seeds = pytest.mark.skipif(not LEROBOT_HELP.exists() or not NERFSTUDIO_HELP.exists(),
                                 reason=f"the reference --help texts are not at {SEEDS}")
# Class names of LeRobot's help sections -> our option names (the catalogue's owners).
OWNERS = {"ACTConfig": "act", "DiffusionConfig": "diffusion", "PI0Config": "pi0", "TDMPCConfig": "tdmpc",
          "VQBeTConfig": "vqbet", "AlohaEnv": "aloha", "PushtEnv": "pusht", "XarmEnv": "xarm",
          "AdamConfig": "adam", "AdamWConfig": "adamw", "SGDConfig": "sgd", "DiffuserSchedulerConfig": "diffuser",
          "VQBeTSchedulerConfig": "vqbet", "CosineDecayWithWarmupSchedulerConfig": "cosine_decay_with_warmup"}
PARSER = OverridesParser.create()


def parse_lerobot_help(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """flag -> (type, owners): types from the usage line, owners from the per-class sections."""
    usage = text[text.index("usage:"): text.index("\n\n")]
    flags: dict[str, list] = {}
    for m in re.finditer(r"\[(-)", usage):
        depth, j = 0, m.start()
        while True:
            depth += {"[": 1, "]": -1}.get(usage[j], 0)
            j += 1
            if depth == 0:
                break
        name, _, seed_type = " ".join(usage[m.start() + 1: j - 1].split()).partition(" ")
        flags["--help" if name == "-h" else name] = [seed_type, []]
    owner = None
    for line in text.splitlines():
        header = re.match(r"^(\w+) \['[\w.]+'\]:$", line)
        if header or re.match(r"^\w", line):
            owner = OWNERS.get(header.group(1)) if header else None
            continue
        option = re.match(r"^  (--[\w.]+)", line)
        if option and owner:
            flags[option.group(1)][1].append(owner)
    return {k: (t, tuple(o)) for k, (t, o) in flags.items()}


def parse_nerfstudio_help(text: str) -> dict[str, str]:
    """flag -> type; a type too long for the option's line continues on unindented lines below it."""
    flags: dict[str, str] = {}
    last = None
    for raw in text.splitlines():
        body = raw[2:].rstrip().rstrip("│").rstrip() if raw.startswith("│") else None
        option = re.match(r"^(?:-h, )?(--[\w.\-]+)(?: (.*))?$", body or "")
        if option:
            last = option.group(1)
            flags[last] = (option.group(2) or "").strip()
        elif last and body and not body.startswith((" ", "─")):
            flags[last] = f"{flags[last]} {body}".strip()
        else:
            last = None
    return flags


@needs_seeds
def test_catalogues_transcribe_both_help_texts():
    lerobot = parse_lerobot_help(LEROBOT_HELP.read_text())
    nerfstudio = parse_nerfstudio_help(NERFSTUDIO_HELP.read_text())
    assert {f: (s.seed_type, s.owners) for f, s in LEROBOT.items()} == lerobot
    assert list(LEROBOT) == list(lerobot)
    assert {f: s.seed_type for f, s in NERFSTUDIO.items()} == nerfstudio
    assert list(NERFSTUDIO) == list(nerfstudio)
    assert (len(lerobot), len(nerfstudio)) == (192, 141)


def test_seed_flags_that_share_a_spelling_share_a_target():
    assert set(LEROBOT) & set(NERFSTUDIO) == {"--help"}
    spellings: dict[str, set] = {}
    for flag in SEED_FLAGS:
        if flag not in ("--help", PRESET_FLAG):
            spellings.setdefault(flag.replace("_", "-"), set()).add(seed_flags.target_key(flag, rule_for(flag)))
    assert all(len(targets) == 1 for targets in spellings.values())


def _sample_words(seed: seed_flags.SeedFlag) -> list[str]:
    listed = re.fullmatch(r"\{([\w,]+)\}", seed.seed_type)
    return {"bool": ["True"], "list": ["1", "2"], "any": ["0.9", "0.999"], "pairs": ["near_plane", "2.0"],
            "dict": ['{"VISUAL": "MEAN_STD"}'], "scalar": [listed.group(1).split(",")[0] if listed else "7"]}[seed.kind]


@pytest.mark.parametrize("flag", [f for f in SEED_FLAGS if f not in ("--help", PRESET_FLAG, LOAD_CONFIG_FLAG, VIS_FLAG)])
def test_every_seed_flag_translates_or_names_what_it_awaits(flag):
    seed = SEED_FLAGS[flag]
    rule = rule_for(flag)
    assert rule is not None, f"{flag} has no rule"
    args = [flag, *_sample_words(seed)]
    if rule.target is None:
        with pytest.raises(ValueError) as e:
            translate_argv(args)
        assert str(e.value).startswith(f"{flag} is not supported yet: {rule.note}")
        assert "\n" not in str(e.value)
        assert flag_table.status(seed) == f"not supported: {rule.note}"
        return
    out, notes = translate_argv(args)
    assert len(out) == 1 and notes == [f"translated: python src/train.py {seed_flags.shell_quote(out[0])}"]
    override = PARSER.parse_override(out[0])
    assert override.key_or_group == rule.target if rule.group else seed_flags.target_key(flag, rule)
    assert not flag_table.status(seed).startswith("not supported")


def test_help_stays_hydras_and_the_preset_switch_has_no_override():
    assert translate_argv(["-h"]) == (["-h"], [])
    assert translate_argv(["--help"]) == (["--help"], [])
    out, notes = translate_argv([f"{PRESET_FLAG}=true", "--batch_size", "8"])
    assert out == ["batch_size=8"] and "is the default here" in notes[0]


def test_issue_examples():
    args = ["--policy.type=diffusion", "--env.type=pusht", "--batch_size=8", "--optimizer.lr=1e-4",
            "--offline.steps=100"]
    expected = ["policy=diffusion", "env=pusht", "batch_size=8", "optimizer.lr=1e-4", "steps=100"]
    assert translate_argv(args) == (expected, ["translated: python src/train.py " + " ".join(expected)])
    args = ["--max-num-iterations", "100", "--machine.seed", "1", "--mixed-precision", "False",
            "--pipeline.model.hidden-dim", "32"]
    assert translate_argv(args)[0] == ["steps=100", "machine.seed=1", "use_amp=false", "model.hidden_dim=32"]


@pytest.mark.parametrize("args, expected", [
    (["--pipeline.model.num-levels", "8"], ["model.num_levels=8"]),
    (["--pipeline.model.num_levels=8"], ["model.num_levels=8"]),
    (["--pipeline.model.proposal-net-args-list.0.hidden-dim", "16"], ["model.proposal_net_args_list.0.hidden_dim=16"]),
    (["--pipeline.model.loss-coefficients.rgb-loss-coarse=0.5"], ["model.loss_coefficients.rgb_loss_coarse=0.5"]),
    (["--pipeline.datamanager.camera-optimizer.mode", "off"], ["model.camera_optimizer.mode=off"]),
    (["--pipeline.datamanager.camera-optimizer.optimizer.lr", "6e-4"], ["optimizer.camera_opt.lr=6e-4"]),
    (["--pipeline.datamanager.camera-optimizer.scheduler.max-steps", "9"], ["scheduler.camera_opt.max_steps=9"]),
    (["--pipeline.datamanager.pixel-sampler.keep-full-image", "True"], ["data.pixel_sampler.keep_full_image=true"]),
    (["--optimizers.proposal-networks.scheduler.ramp", "linear"], ["scheduler.proposal_networks.ramp=linear"]),
    (["--optimizers.fields.optimizer.max-norm", "None"], ["optimizer.fields.max_norm=null"]),
    (["--data", "/data/lego", "--method-name", "nerfacto"], ["data.data=/data/lego", "model=nerfacto"]),
    (["--pipeline.datamanager.train-num-images-to-sample-from", "-1"], ["data.train_num_images_to_sample_from=-1"]),
    (["--policy.optimizer_lr=3e-4", "--policy.scheduler_warmup_steps", "10"],
     ["optimizer.lr=3e-4", "scheduler.num_warmup_steps=10"]),
    (["--policy.optimizer_lr_backbone=1e-5"], ["policy.optimizer_lr_backbone=1e-5"]),
    (["--output_dir=outputs/x", "--device", "cpu", "--seed", "3"],
     ["hydra.run.dir=outputs/x", "machine.device_type=cpu", "seed=3"]),
    (["--wandb.enable=false", "--wandb.project", "pusht"], ["logger=none", "logger.experiment_name=pusht"]),
    (["--wandb.enable"], ["logger=mlflow"]),
    (["--offline.steps=1000", "--online.steps=500", "--online.steps_between_rollouts", "50",
      "--online.buffer_capacity", "None", "--online.do_rollout_async", "--online.sampling_ratio=0.25"],
     ["steps=1000", "online.steps=500", "online.steps_between_rollouts=50", "online.buffer_capacity=null",
      "online.do_rollout_async=true", "online.sampling_ratio=0.25"]),
])
def test_translations(args, expected):
    assert translate_argv(args)[0] == expected


@pytest.mark.parametrize("args, expected", [
    (["--policy.down_dims", "512", "1024", "2048"], ["policy.down_dims=[512,1024,2048]"]),
    (["--optimizer.betas", "0.9", "0.999"], ["optimizer.betas=[0.9,0.999]"]),
    (["--policy.optimizer_betas", "0.9", "0.999"], ["optimizer.betas=[0.9,0.999]"]),
    (["--policy.optimizer_betas=[0.9,0.999]"], ["optimizer.betas=[0.9,0.999]"]),
    (["--policy.down_dims=[256, 512]"], ["policy.down_dims=[256, 512]"]),
    (["--policy.down_dims", "64", "batch_size=2"], ["policy.down_dims=[64]", "batch_size=2"]),
    (["--policy.crop_shape", "None", "--steps-per-save", "5"], ["policy.crop_shape=null", "save_freq=5"]),
    (["--pipeline.model.num-proposal-samples-per-ray", "256", "96", "-m"],
     ["model.num_proposal_samples_per_ray=[256,96]", "-m"]),
    (["--pipeline.datamanager.eval-image-indices", "0", "-1"], ["data.eval_image_indices=[0,-1]"]),
    (["--pipeline.model.collider-params", "near_plane", "2.0", "far_plane", "6.0"],
     ["model.collider_params={near_plane:2.0,far_plane:6.0}"]),
    (["--dataset.episodes", "0", "1", "~eval"], ["dataset.episodes=[0,1]", "~eval"]),
])
def test_list_values(args, expected):
    assert translate_argv(args)[0] == expected


@pytest.mark.parametrize("args, expected", [
    (["--resume=True"], "resume=true"), (["--resume", "false"], "resume=false"), (["--resume"], "resume=true"),
    (["--mixed-precision", "FALSE"], "use_amp=false"), (["--save_checkpoint=true"], "save_checkpoint=true"),
    (["--policy.pretrained_backbone_weights=None"], "policy.pretrained_backbone_weights=null"),
    (["--job_name", "null"], "job_name=null"),
])
def test_booleans_and_null(args, expected):
    assert translate_argv(args)[0] == [expected]


def test_a_bare_boolean_leaves_the_next_override_alone():
    assert translate_argv(["--resume", "batch_size=8"])[0] == ["resume=true", "batch_size=8"]


def test_a_boolean_flag_rejects_other_words():
    with pytest.raises(ValueError, match=r"--resume takes true or false, got 'maybe'"):
        translate_argv(["--resume=maybe"])


@pytest.mark.parametrize("text", [
    "hello, world", "a=b", "[x]", "{y}", "it's", 'say "hi"', "both ' and \"", "trailing\\", "back\\'quote",
    " padded ", "", "x,y", "f(z)", "colon: here", "plain-text_1.0/ok",
])
def test_strings_survive_hydras_grammar(text):
    out, notes = translate_argv(["--wandb.notes", text])
    assert PARSER.parse_override(out[0]).value() == text
    assert shlex.split(notes[0].removeprefix("translated: "))[2:] == out


def test_words_keep_their_hydra_types():
    out, _ = translate_argv(["--optimizer.lr", "1e-4", "--batch_size", "8", "--env.task", "PushT-v0"])
    assert [PARSER.parse_override(o).value() for o in out] == [1e-4, 8, "PushT-v0"]


def test_commas_are_a_sweep_only_under_multirun():
    assert translate_argv(["--optimizer.lr=1e-4,3e-4"])[0] == ["optimizer.lr='1e-4,3e-4'"]
    assert translate_argv(["-m", "--optimizer.lr=1e-4,3e-4"])[0] == ["-m", "optimizer.lr=1e-4,3e-4"]


def test_mappings():
    assert translate_argv(["--policy.normalization_mapping", '{"VISUAL": "MEAN_STD", "STATE": "MIN_MAX"}'])[0] == [
        "policy.normalization_mapping={VISUAL:MEAN_STD,STATE:MIN_MAX}"]
    assert translate_argv(["--policy.normalization_mapping={VISUAL:IDENTITY}"])[0] == [
        "policy.normalization_mapping={VISUAL:IDENTITY}"]
    out, _ = translate_argv(["--env.features", '{"action": {"type": "ACTION", "shape": [2]}, "x": "1", "lr": 1e-4}'])
    assert PARSER.parse_override(out[0]).value() == {"action": {"type": "ACTION", "shape": [2]}, "x": "1", "lr": 1e-4}
    assert translate_argv(["--env.features_map", "pixels: observation.image"])[0] == [
        "env.features_map={pixels:observation.image}"]
    with pytest.raises(ValueError, match="takes a mapping"):
        translate_argv(["--env.features_map", "[1, 2]"])


@pytest.mark.parametrize("args", [
    ["policy=diffusion", "env=pusht", "batch_size=8"],
    ["+experiment=quickstart", "~logger", "++seed=3", "optimizer=adamw"],
    ["-m", "optimizer.lr=1e-4,3e-4", "hydra/launcher=basic"],
    ["--multirun", "--cfg", "job", "--resolve"],
    ["--cfg=hydra", "-p", "policy"],
    ["--info"], ["--info", "defaults", "seed=1"], ["-i", "searchpath"],
    ["--hydra-help"], ["--version"], ["--shell-completion", "query=tr"],
    ["-cn", "train", "-cp", "../conf", "-cd", "/tmp/conf"], ["--config-name=train", "--package", "_global_"],
    ["--run", "--experimental-rerun", "outputs/x/.hydra/config.pickle"],
])
def test_hydra_syntax_passes_through(args):
    assert translate_argv(args) == (args, [])


def test_hydra_flag_table_matches_hydras_parser():
    from hydra._internal.utils import get_args_parser

    words = {}
    for action in get_args_parser()._actions:
        for option in action.option_strings:
            words[option] = {0: 0, None: 1, "?": "?"}[action.nargs]
    assert seed_flags.HYDRA_FLAGS == words


def test_unknown_flag_names_the_three_closest():
    with pytest.raises(ValueError) as e:
        translate_argv(["--policy.horizn=8"])
    message = str(e.value)
    assert message.startswith("unknown flag --policy.horizn; did you mean --policy.horizon, ")
    assert "\n" not in message and message.endswith("?") and message.count("--") == 4
    with pytest.raises(ValueError, match=r"^unknown flag --pipeline.model.hiden-dim; did you mean --pipeline.model.h"):
        translate_argv(["--pipeline.model.hiden-dim", "32"])


def test_not_supported_flags_say_why_in_one_line():
    with pytest.raises(ValueError, match=r"^--online is not supported yet: a draccus config file; .*experiment="):
        translate_argv(["--online=online.json"])
    with pytest.raises(ValueError, match=r"^--viewer.make-share-url is not supported yet: it needs the internet"):
        translate_argv(["--viewer.make-share-url", "True"])
    with pytest.raises(ValueError, match=r"^--policy is not supported yet: a draccus config file; .* policy=<name>"):
        translate_argv(["--policy=act"])


def test_missing_values_are_reported():
    with pytest.raises(ValueError, match="--batch_size needs a value"):
        translate_argv(["--batch_size"])
    with pytest.raises(ValueError, match="--policy.down_dims needs one or more values"):
        translate_argv(["--policy.down_dims", "--batch_size=8"])
    with pytest.raises(ValueError, match="name value pairs"):
        translate_argv(["--pipeline.model.collider-params", "near_plane"])


def test_training_preset_switch():
    with pytest.raises(ValueError, match=r"=false needs an optimizer: pick optimizer=adam\|adamw\|sgd"):
        translate_argv([f"{PRESET_FLAG}=false"])
    out, notes = translate_argv([f"{PRESET_FLAG}=false", "--optimizer.type", "adamw"])
    assert out == ["optimizer=adamw"] and "replaces the policy's preset" in notes[0]
    assert translate_argv(["optimizer=sgd", PRESET_FLAG, "false"])[0] == ["optimizer=sgd"]


def test_our_own_keys_in_flag_form():
    out, notes = translate_argv(["--amp_dtype=fp16", "--dataset.demos.n-episodes", "3", "--eval.max_videos", "2",
                                 "--progress_bar", "False", "--machine.num_devices=2", "--hydra.job.chdir=false"])
    assert out == ["amp_dtype=fp16", "dataset.demos.n_episodes=3", "eval.max_videos=2", "progress_bar=false",
                   "machine.num_devices=2", "hydra.job.chdir=false"]
    assert notes == ["translated: python src/train.py " + " ".join(out)]


def test_config_keys_are_fast_and_survive_a_missing_group(tmp_path, monkeypatch):
    seed_flags.config_keys.cache_clear()
    start = time.perf_counter()
    keys = seed_flags.config_keys()
    assert time.perf_counter() - start < 1.0
    assert {"batch_size", "machine.seed", "optimizer.lr", "hydra.run.dir"} <= set(keys)
    conf = tmp_path / "conf"
    shutil.copytree(seed_flags.CONF_DIR, conf)
    shutil.rmtree(conf / "policy")
    (conf / "policy").mkdir()
    monkeypatch.setattr(seed_flags, "CONF_DIR", conf)
    seed_flags.config_keys.cache_clear()
    try:
        keys = seed_flags.config_keys()
        assert "batch_size" in keys and "dataset.repo_id" in keys and "policy.horizon" not in keys
        assert translate_argv(["--batch_size=2"])[0] == ["batch_size=2"]
    finally:
        seed_flags.config_keys.cache_clear()


@needs_seeds
def test_flags_doc_lists_every_seed_option():
    doc = (REPO / "docs" / "FLAGS.md").read_text()
    help_flags = [*parse_lerobot_help(LEROBOT_HELP.read_text()), *parse_nerfstudio_help(NERFSTUDIO_HELP.read_text())]
    missing = [f for f in help_flags if f"| `{f}`" not in doc and f != "--help"]
    assert not missing and "| `-h`, `--help`" in doc


def test_flags_doc_is_the_generators_output():
    assert (REPO / "docs" / "FLAGS.md").read_text() == flag_table.render(), (
        "docs/FLAGS.md is stale: run `python src/cli/flag_table.py`")


@pytest.mark.slow
def test_train_prints_the_translation_and_composes():
    result = subprocess.run(
        [sys.executable, "src/train.py", "--policy.type=diffusion", "--offline.steps=0", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert "translated: python src/train.py policy=diffusion steps=0 --cfg job" in result.stderr
    assert result.returncode == 0, result.stderr
    assert re.search(r"^steps: 0$", result.stdout, re.MULTILINE)


def test_nerfstudio_eval_cadence_and_warm_start_flags_reach_real_keys(compose):
    args = ["--method-name", "nerfacto", "--steps-per-eval-batch", "100", "--steps-per-eval-image", "200",
            "--steps-per-eval-all-images", "300", "--load-dir", "outputs/a", "--load-step", "400",
            "--load-scheduler", "False"]
    out, _ = translate_argv(args)
    assert out == ["model=nerfacto", "eval.steps_per_eval_batch=100", "eval.steps_per_eval_image=200",
                   "eval.steps_per_eval_all_images=300", "load_dir=outputs/a", "load_step=400", "load_scheduler=false"]
    assert translate_argv(["--load-checkpoint", "None"])[0] == ["load_checkpoint=null"]
    cfg = compose(["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto",
                   "data=synthetic", *out[1:]])
    assert (cfg.eval.steps_per_eval_batch, cfg.eval.steps_per_eval_image, cfg.eval.steps_per_eval_all_images) == (
        100, 200, 300)
    assert (cfg.load_dir, cfg.load_step, cfg.load_scheduler) == ("outputs/a", 400, False)
    for flag in ("--steps-per-eval-batch", "--steps-per-eval-image", "--steps-per-eval-all-images"):
        assert flag_table.status(SEED_FLAGS[flag]) == "supported with eval=views"
    for flag in ("--load-dir", "--load-step", "--load-checkpoint", "--load-scheduler"):
        assert flag_table.status(SEED_FLAGS[flag]) == "supported"


def test_nerfstudio_only_flags_name_nerfacto():
    assert names_nerfacto(["--pipeline.model.hidden-dim", "32"])
    assert names_nerfacto(["--max-num-iterations", "1", "--pipeline.datamanager.camera-optimizer.mode=off"])
    assert not names_nerfacto(["--max-num-iterations", "100", "--machine.seed", "1"])  # both families' keys
    assert not names_nerfacto(["--policy.type=diffusion", "--batch_size=8", "model.hidden_dim=32"])


NERFACTO = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic"]


def test_nerfstudio_run_option_flags_reach_root_keys_of_both_families(compose):
    args = ["--save-only-latest-checkpoint", "False", "--relative-model-dir", "nerfstudio_models",
            "--use-grad-scaler", "True", "--log-gradients"]
    out, _ = translate_argv(args)
    assert out == ["save_only_latest_checkpoint=false", "relative_model_dir=nerfstudio_models", "use_grad_scaler=true",
                   "log_gradients=true"]
    for cfg in (compose([*NERFACTO, *out]), compose(out)):
        assert (cfg.save_only_latest_checkpoint, cfg.relative_model_dir, cfg.use_grad_scaler, cfg.log_gradients) == (
            False, "nerfstudio_models", True, True)
    defaults, robot = compose(NERFACTO), compose([])
    assert (defaults.save_only_latest_checkpoint, robot.save_only_latest_checkpoint) == (True, False)  # the seed's
    assert (robot.relative_model_dir, robot.use_grad_scaler, robot.log_gradients) == ("checkpoints", False, False)
    assert not names_nerfacto(args)  # root keys of both families
    for flag in ("--save-only-latest-checkpoint", "--relative-model-dir", "--use-grad-scaler", "--log-gradients",
                 LOAD_CONFIG_FLAG):
        assert flag_table.status(SEED_FLAGS[flag]) == "supported"


def test_pixel_sampler_flags(compose):
    out, _ = translate_argv(["--pipeline.datamanager.pixel-sampler.num-rays-per-batch", "1024",
                             "--pipeline.datamanager.pixel-sampler.keep-full-image", "True",
                             "--pipeline.datamanager.pixel-sampler.is-equirectangular", "False"])
    assert out == ["data.pixel_sampler.num_rays_per_batch=1024", "data.pixel_sampler.keep_full_image=true",
                   "data.pixel_sampler.is_equirectangular=false"]
    cfg = compose([*NERFACTO, *out])
    assert (cfg.data.pixel_sampler.num_rays_per_batch, cfg.data.pixel_sampler.keep_full_image,
            cfg.data.pixel_sampler.is_equirectangular) == (1024, True, False)
    assert compose(NERFACTO).data.pixel_sampler.is_equirectangular is None  # from the cameras, as nerfstudio
    status = flag_table.status(SEED_FLAGS["--pipeline.datamanager.pixel-sampler.is-equirectangular"])
    assert status == flag_table.status(SEED_FLAGS["--pipeline.datamanager.pixel-sampler.keep-full-image"])
    assert status.startswith("supported")


def _saved_run(tmp_path, overrides: list[str]):
    """A run folder as train.py leaves it: <run>/config.yaml (resolved) and checkpoints/<step>/choices.yaml."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from config.store import register_schemas
    from config.saved import RUN_GROUPS

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        choices = {g: c for g, c in cfg.hydra.runtime.choices.items() if g in RUN_GROUPS}
        body = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "000010"
    ckpt.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(body))
    (ckpt / "config.yaml").write_text(OmegaConf.to_yaml(body))
    (ckpt / "choices.yaml").write_text(OmegaConf.to_yaml(choices))
    (run / "checkpoints" / "last").symlink_to("000010")
    return run, body


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("family", ["nerf", "robot"])
def test_load_config_composes_the_saved_config_again(compose, tmp_path, family):
    """--load-config <run>/config.yaml: the overrides it writes compose exactly the saved config."""
    if family == "nerf":
        run, saved = _saved_run(tmp_path, [*NERFACTO, "steps=123", "model.num_levels=4", "data.scene.size=16",
                                           "model.proposal_net_args_list.0.max_res=64", "data.eval_image_indices=[0,2]",
                                           "eval.lpips_weights='/w x/alex.pth'", "machine.device_type=cpu"])
    else:
        run, saved = _saved_run(tmp_path, ["policy.horizon=8", "optimizer.lr=3e-4", "batch_size=5"])
    for path in (run / "config.yaml", run / "checkpoints" / "000010" / "config.yaml", run):
        out, notes = translate_argv([LOAD_CONFIG_FLAG, str(path)])
        assert f"{LOAD_CONFIG_FLAG} " in notes[0] and notes[-1].startswith("translated: python src/train.py")
        assert _plain(compose(out)) == {**saved, "resume": False}
    if family == "nerf":
        assert {"model=nerfacto", "data=synthetic", "optimizer=preset/nerfacto", "~policy"} <= set(out)
        assert "steps=123" in out and "model.num_levels=4" in out and "seed=42" not in out  # only what differs
    # flags and overrides after it apply on top
    out, _ = translate_argv([LOAD_CONFIG_FLAG, str(run / "config.yaml"), "--max-num-iterations", "7", "batch_size=3"])
    cfg = compose(out)
    assert (cfg.steps, cfg.batch_size) == (7, 3)


def test_load_config_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=f"{LOAD_CONFIG_FLAG}: no config at .*nope"):
        translate_argv([LOAD_CONFIG_FLAG, str(tmp_path / "nope" / "config.yaml")])
    (tmp_path / "config.yaml").write_text("steps: 3\n")
    with pytest.raises(ValueError, match="no choices.yaml beside"):
        translate_argv([LOAD_CONFIG_FLAG, str(tmp_path / "config.yaml")])
    (tmp_path / "choices.yaml").write_text("policy: diffusion\n")
    (tmp_path / "config.yaml").write_text("steps: 3\nno_such_key: 1\n")
    with pytest.raises(ValueError, match="keys that the current conf/ does not \\(no_such_key\\)"):
        translate_argv([LOAD_CONFIG_FLAG, str(tmp_path / "config.yaml")])
    assert translate_argv([LOAD_CONFIG_FLAG, "None"])[0] == []
