"""Translates LeRobot's and nerfstudio's command-line flags into Hydra overrides before Hydra parses argv.

Users arrive with `--policy.type=act` (LeRobot, draccus) or `--pipeline.model.hidden-dim 64`
(nerfstudio, tyro) in their fingers and scripts. Rather than keeping a second parser, the flags are
rewritten into overrides once and the Hydra form is printed, so Hydra stays the only parser and users
learn its syntax. The catalogues below transcribe both `--help` texts (flag, the type printed there,
and the policy/env/optimizer/scheduler options that declare it); `RULES` maps them onto our keys, and
docs/FLAGS.md is generated from the same tables by `cli/flag_table.py`.
"""

from __future__ import annotations

import difflib
import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# LeRobot's `train.py --help` (draccus): one option per line, in the order of its usage line.
_LEROBOT = """
--help
--config_path                                 str
--dataset                                     str
--dataset.repo_id                             str
--dataset.episodes                            [List]
--image_transforms                            str
--dataset.image_transforms.enable             bool
--dataset.image_transforms.max_num_transforms int
--dataset.image_transforms.random_order       bool
--dataset.image_transforms.tfs                Dict
--dataset.local_files_only                    bool
--dataset.use_imagenet_stats                  bool
--dataset.video_backend                       str
--env                                         str
--env.type                                    {aloha,pusht,xarm}
--env.task                                    str ; aloha pusht xarm
--env.fps                                     int ; aloha pusht xarm
--env.features                                Dict ; aloha pusht xarm
--env.features_map                            Dict ; aloha pusht xarm
--env.episode_length                          int ; aloha pusht xarm
--env.obs_type                                str ; aloha pusht xarm
--env.render_mode                             str ; aloha pusht xarm
--env.visualization_width                     int ; pusht xarm
--env.visualization_height                    int ; pusht xarm
--policy                                      str
--policy.type                                 {act,diffusion,pi0,tdmpc,vqbet}
--policy.replace_final_stride_with_dilation   int ; act
--policy.pre_norm                             bool ; act
--policy.dim_model                            int ; act
--policy.n_heads                              int ; act
--policy.dim_feedforward                      int ; act
--policy.feedforward_activation               str ; act
--policy.n_encoder_layers                     int ; act
--policy.n_decoder_layers                     int ; act
--policy.use_vae                              bool ; act
--policy.n_vae_encoder_layers                 int ; act
--policy.temporal_ensemble_coeff              [float] ; act
--policy.kl_weight                            float ; act
--policy.optimizer_lr_backbone                float ; act
--policy.drop_n_last_frames                   int ; diffusion
--policy.use_separate_rgb_encoder_per_camera  bool ; diffusion
--policy.down_dims                            int [int, ...] ; diffusion
--policy.kernel_size                          int ; diffusion
--policy.n_groups                             int ; diffusion
--policy.diffusion_step_embed_dim             int ; diffusion
--policy.use_film_scale_modulation            bool ; diffusion
--policy.noise_scheduler_type                 str ; diffusion
--policy.num_train_timesteps                  int ; diffusion
--policy.beta_schedule                        str ; diffusion
--policy.beta_start                           float ; diffusion
--policy.beta_end                             float ; diffusion
--policy.prediction_type                      str ; diffusion
--policy.clip_sample                          bool ; diffusion
--policy.clip_sample_range                    float ; diffusion
--policy.num_inference_steps                  [int] ; diffusion
--policy.do_mask_loss_for_padding             bool ; diffusion
--policy.scheduler_name                       str ; diffusion
--policy.chunk_size                           int ; act pi0
--policy.max_state_dim                        int ; pi0
--policy.max_action_dim                       int ; pi0
--policy.resize_imgs_with_padding             int int ; pi0
--policy.empty_cameras                        int ; pi0
--policy.adapt_to_pi_aloha                    bool ; pi0
--policy.use_delta_joint_actions_aloha        bool ; pi0
--policy.tokenizer_max_length                 int ; pi0
--policy.proj_width                           int ; pi0
--policy.num_steps                            int ; pi0
--policy.use_cache                            bool ; pi0
--policy.attention_implementation             str ; pi0
--policy.freeze_vision_encoder                bool ; pi0
--policy.train_expert_only                    bool ; pi0
--policy.train_state_proj                     bool ; pi0
--policy.scheduler_decay_steps                int ; pi0
--policy.scheduler_decay_lr                   float ; pi0
--policy.n_action_repeats                     int ; tdmpc
--policy.horizon                              int ; diffusion tdmpc
--policy.n_action_steps                       int ; act diffusion pi0 tdmpc
--policy.image_encoder_hidden_dim             int ; tdmpc
--policy.state_encoder_hidden_dim             int ; tdmpc
--policy.latent_dim                           int ; act tdmpc
--policy.q_ensemble_size                      int ; tdmpc
--policy.mlp_dim                              int ; tdmpc
--policy.discount                             float ; tdmpc
--policy.use_mpc                              bool ; tdmpc
--policy.cem_iterations                       int ; tdmpc
--policy.max_std                              float ; tdmpc
--policy.min_std                              float ; tdmpc
--policy.n_gaussian_samples                   int ; tdmpc
--policy.n_pi_samples                         int ; tdmpc
--policy.uncertainty_regularizer_coeff        float ; tdmpc
--policy.n_elites                             int ; tdmpc
--policy.elite_weighting_temperature          float ; tdmpc
--policy.gaussian_mean_momentum               float ; tdmpc
--policy.max_random_shift_ratio               float ; tdmpc
--policy.reward_coeff                         float ; tdmpc
--policy.expectile_weight                     float ; tdmpc
--policy.value_coeff                          float ; tdmpc
--policy.consistency_coeff                    float ; tdmpc
--policy.advantage_scaling                    float ; tdmpc
--policy.pi_coeff                             float ; tdmpc
--policy.temporal_decay_coeff                 float ; tdmpc
--policy.target_model_momentum                float ; tdmpc
--policy.n_obs_steps                          int ; act diffusion pi0 tdmpc vqbet
--policy.normalization_mapping                Dict ; act diffusion pi0 tdmpc vqbet
--policy.input_features                       Dict ; act diffusion pi0 tdmpc vqbet
--policy.output_features                      Dict ; act diffusion pi0 tdmpc vqbet
--policy.n_action_pred_token                  int ; vqbet
--policy.action_chunk_size                    int ; vqbet
--policy.vision_backbone                      str ; act diffusion vqbet
--policy.crop_shape                           [int int] ; diffusion vqbet
--policy.crop_is_random                       bool ; diffusion vqbet
--policy.pretrained_backbone_weights          [str] ; act diffusion vqbet
--policy.use_group_norm                       bool ; diffusion vqbet
--policy.spatial_softmax_num_keypoints        int ; diffusion vqbet
--policy.n_vqvae_training_steps               int ; vqbet
--policy.vqvae_n_embed                        int ; vqbet
--policy.vqvae_embedding_dim                  int ; vqbet
--policy.vqvae_enc_hidden_dim                 int ; vqbet
--policy.gpt_block_size                       int ; vqbet
--policy.gpt_input_dim                        int ; vqbet
--policy.gpt_output_dim                       int ; vqbet
--policy.gpt_n_layer                          int ; vqbet
--policy.gpt_n_head                           int ; vqbet
--policy.gpt_hidden_dim                       int ; vqbet
--policy.dropout                              float ; act vqbet
--policy.mlp_hidden_dim                       int ; vqbet
--policy.offset_loss_weight                   float ; vqbet
--policy.primary_code_loss_weight             float ; vqbet
--policy.secondary_code_loss_weight           float ; vqbet
--policy.bet_softmax_temperature              float ; vqbet
--policy.sequentially_select                  bool ; vqbet
--policy.optimizer_lr                         float ; act diffusion pi0 tdmpc vqbet
--policy.optimizer_betas                      Any ; diffusion pi0 vqbet
--policy.optimizer_eps                        float ; diffusion pi0 vqbet
--policy.optimizer_weight_decay               float ; act diffusion pi0 vqbet
--policy.optimizer_vqvae_lr                   float ; vqbet
--policy.optimizer_vqvae_weight_decay         float ; vqbet
--policy.scheduler_warmup_steps               int ; diffusion pi0 vqbet
--output_dir                                  [Path]
--job_name                                    [str]
--resume                                      bool
--device                                      [str]
--use_amp                                     bool
--seed                                        [int]
--num_workers                                 int
--batch_size                                  int
--eval_freq                                   int
--log_freq                                    int
--save_checkpoint                             bool
--save_freq                                   int
--offline                                     str
--offline.steps                               int
--online                                      str
--online.steps                                int
--online.rollout_n_episodes                   int
--online.rollout_batch_size                   int
--online.steps_between_rollouts               [int]
--online.sampling_ratio                       float
--online.env_seed                             [int]
--online.buffer_capacity                      [int]
--online.buffer_seed_size                     int
--online.do_rollout_async                     bool
--use_policy_training_preset                  bool
--optimizer                                   str
--optimizer.type                              {adam,adamw,sgd}
--optimizer.betas                             float float ; adam adamw
--optimizer.eps                               float ; adam adamw
--optimizer.lr                                float ; adam adamw sgd
--optimizer.weight_decay                      float ; adam adamw sgd
--optimizer.grad_clip_norm                    float ; adam adamw sgd
--optimizer.momentum                          float ; sgd
--optimizer.dampening                         float ; sgd
--optimizer.nesterov                          bool ; sgd
--scheduler                                   str
--scheduler.type                              {diffuser,vqbet,cosine_decay_with_warmup}
--scheduler.name                              str ; diffuser
--scheduler.num_vqvae_training_steps          int ; vqbet
--scheduler.num_cycles                        float ; vqbet
--scheduler.num_warmup_steps                  int ; diffuser vqbet cosine_decay_with_warmup
--scheduler.num_decay_steps                   int ; cosine_decay_with_warmup
--scheduler.peak_lr                           float ; cosine_decay_with_warmup
--scheduler.decay_lr                          float ; cosine_decay_with_warmup
--eval                                        str
--eval.n_episodes                             int
--eval.batch_size                             int
--eval.use_async_envs                         bool
--wandb                                       str
--wandb.enable                                bool
--wandb.disable_artifact                      bool
--wandb.project                               str
--wandb.entity                                [str]
--wandb.notes                                 [str]
"""

# nerfstudio's `ns-train nerfacto --help` (tyro), in the order of the help text.
_NERFSTUDIO = """
--help
--output-dir                                                    PATH
--method-name                                                   {None}|STR
--experiment-name                                               {None}|STR
--project-name                                                  {None}|STR
--timestamp                                                     STR
--vis                                                           {viewer,wandb,tensorboard,comet,viewer+wandb,viewer+tensorboard,viewer+comet,viewer_…
--data                                                          {None}|PATH
--prompt                                                        {None}|STR
--relative-model-dir                                            PATH
--load-scheduler                                                {True,False}
--steps-per-save                                                INT
--steps-per-eval-batch                                          INT
--steps-per-eval-image                                          INT
--steps-per-eval-all-images                                     INT
--max-num-iterations                                            INT
--mixed-precision                                               {True,False}
--use-grad-scaler                                               {True,False}
--save-only-latest-checkpoint                                   {True,False}
--load-dir                                                      {None}|PATH
--load-step                                                     {None}|INT
--load-config                                                   {None}|PATH
--load-checkpoint                                               {None}|PATH
--log-gradients                                                 {True,False}
--gradient-accumulation-steps                                   INT
--machine.seed                                                  INT
--machine.num-devices                                           INT
--machine.num-machines                                          INT
--machine.machine-rank                                          INT
--machine.dist-url                                              STR
--machine.device-type                                           {cpu,cuda,mps}
--logging.relative-log-dir                                      PATH
--logging.steps-per-log                                         INT
--logging.max-buffer-size                                       INT
--logging.profiler                                              {none,basic,pytorch}
--logging.local-writer.enable                                   {True,False}
--logging.local-writer.stats-to-track                           [{ITER_TRAIN_TIME,TOTAL_TRAIN_TIME,ETA,TRAIN_RAYS_PER_SEC,TEST_RAYS_PER_SEC,VIS_RAYS… [...]]
--logging.local-writer.max-log-size                             INT
--viewer.relative-log-filename                                  STR
--viewer.websocket-port                                         {None}|INT
--viewer.websocket-port-default                                 INT
--viewer.websocket-host                                         STR
--viewer.num-rays-per-chunk                                     INT
--viewer.max-num-display-images                                 INT
--viewer.quit-on-train-completion                               {True,False}
--viewer.image-format                                           {jpeg,png}
--viewer.jpeg-quality                                           INT
--viewer.make-share-url                                         {True,False}
--pipeline.datamanager.data                                     {None}|PATH
--pipeline.datamanager.masks-on-gpu                             {True,False}
--pipeline.datamanager.images-on-gpu                            {True,False}
--pipeline.datamanager.train-num-rays-per-batch                 INT
--pipeline.datamanager.train-num-images-to-sample-from          INT
--pipeline.datamanager.train-num-times-to-repeat-images         INT
--pipeline.datamanager.eval-num-rays-per-batch                  INT
--pipeline.datamanager.eval-num-images-to-sample-from           INT
--pipeline.datamanager.eval-num-times-to-repeat-images          INT
--pipeline.datamanager.eval-image-indices                       {None}|{[INT [INT ...]]}
--pipeline.datamanager.camera-res-scale-factor                  FLOAT
--pipeline.datamanager.patch-size                               INT
--pipeline.datamanager.camera-optimizer.mode                    {off,SO3xR3,SE3}
--pipeline.datamanager.camera-optimizer.position-noise-std      FLOAT
--pipeline.datamanager.camera-optimizer.orientation-noise-std   FLOAT
--pipeline.datamanager.camera-optimizer.optimizer.lr            FLOAT
--pipeline.datamanager.camera-optimizer.optimizer.eps           FLOAT
--pipeline.datamanager.camera-optimizer.optimizer.max-norm      {None}|FLOAT
--pipeline.datamanager.camera-optimizer.optimizer.weight-decay  FLOAT
--pipeline.datamanager.camera-optimizer.scheduler.lr-pre-warmup FLOAT
--pipeline.datamanager.camera-optimizer.scheduler.lr-final      {None}|FLOAT
--pipeline.datamanager.camera-optimizer.scheduler.warmup-steps  INT
--pipeline.datamanager.camera-optimizer.scheduler.max-steps     INT
--pipeline.datamanager.camera-optimizer.scheduler.ramp          {linear,cosine}
--pipeline.datamanager.pixel-sampler.num-rays-per-batch         INT
--pipeline.datamanager.pixel-sampler.keep-full-image            {True,False}
--pipeline.datamanager.pixel-sampler.is-equirectangular         {True,False}
--pipeline.model.enable-collider                                {True,False}
--pipeline.model.collider-params                                {None}|{[STR FLOAT [STR FLOAT ...]]}
--pipeline.model.eval-num-rays-per-chunk                        INT
--pipeline.model.prompt                                         {None}|STR
--pipeline.model.near-plane                                     FLOAT
--pipeline.model.far-plane                                      FLOAT
--pipeline.model.background-color                               {random,last_sample,black,white}
--pipeline.model.hidden-dim                                     INT
--pipeline.model.hidden-dim-color                               INT
--pipeline.model.hidden-dim-transient                           INT
--pipeline.model.num-levels                                     INT
--pipeline.model.base-res                                       INT
--pipeline.model.max-res                                        INT
--pipeline.model.log2-hashmap-size                              INT
--pipeline.model.features-per-level                             INT
--pipeline.model.num-proposal-samples-per-ray                   [INT [INT ...]]
--pipeline.model.num-nerf-samples-per-ray                       INT
--pipeline.model.proposal-update-every                          INT
--pipeline.model.proposal-warmup                                INT
--pipeline.model.num-proposal-iterations                        INT
--pipeline.model.use-same-proposal-network                      {True,False}
--pipeline.model.proposal-initial-sampler                       {piecewise,uniform}
--pipeline.model.interlevel-loss-mult                           FLOAT
--pipeline.model.distortion-loss-mult                           FLOAT
--pipeline.model.orientation-loss-mult                          FLOAT
--pipeline.model.pred-normal-loss-mult                          FLOAT
--pipeline.model.use-proposal-weight-anneal                     {True,False}
--pipeline.model.use-average-appearance-embedding               {True,False}
--pipeline.model.proposal-weights-anneal-slope                  FLOAT
--pipeline.model.proposal-weights-anneal-max-num-iters          INT
--pipeline.model.use-single-jitter                              {True,False}
--pipeline.model.predict-normals                                {True,False}
--pipeline.model.disable-scene-contraction                      {True,False}
--pipeline.model.use-gradient-scaling                           {True,False}
--pipeline.model.implementation                                 {tcnn,torch}
--pipeline.model.appearance-embed-dim                           INT
--pipeline.model.loss-coefficients.rgb-loss-coarse              FLOAT
--pipeline.model.loss-coefficients.rgb-loss-fine                FLOAT
--pipeline.model.proposal-net-args-list.0.hidden-dim            INT
--pipeline.model.proposal-net-args-list.0.log2-hashmap-size     INT
--pipeline.model.proposal-net-args-list.0.num-levels            INT
--pipeline.model.proposal-net-args-list.0.max-res               INT
--pipeline.model.proposal-net-args-list.0.use-linear            {True,False}
--pipeline.model.proposal-net-args-list.1.hidden-dim            INT
--pipeline.model.proposal-net-args-list.1.log2-hashmap-size     INT
--pipeline.model.proposal-net-args-list.1.num-levels            INT
--pipeline.model.proposal-net-args-list.1.max-res               INT
--pipeline.model.proposal-net-args-list.1.use-linear            {True,False}
--optimizers.proposal-networks.optimizer.lr                     FLOAT
--optimizers.proposal-networks.optimizer.eps                    FLOAT
--optimizers.proposal-networks.optimizer.max-norm               {None}|FLOAT
--optimizers.proposal-networks.optimizer.weight-decay           FLOAT
--optimizers.proposal-networks.scheduler.lr-pre-warmup          FLOAT
--optimizers.proposal-networks.scheduler.lr-final               {None}|FLOAT
--optimizers.proposal-networks.scheduler.warmup-steps           INT
--optimizers.proposal-networks.scheduler.max-steps              INT
--optimizers.proposal-networks.scheduler.ramp                   {linear,cosine}
--optimizers.fields.optimizer.lr                                FLOAT
--optimizers.fields.optimizer.eps                               FLOAT
--optimizers.fields.optimizer.max-norm                          {None}|FLOAT
--optimizers.fields.optimizer.weight-decay                      FLOAT
--optimizers.fields.scheduler.lr-pre-warmup                     FLOAT
--optimizers.fields.scheduler.lr-final                          {None}|FLOAT
--optimizers.fields.scheduler.warmup-steps                      INT
--optimizers.fields.scheduler.max-steps                         INT
--optimizers.fields.scheduler.ramp                              {linear,cosine}
"""


@dataclass(frozen=True)
class SeedFlag:
    """One option of a seed's `--help`: the flag, its type as printed there, and the options of a
    choice group (policy, env, optimizer, scheduler) that declare it (empty: every option has it)."""

    flag: str
    seed_type: str
    owners: tuple[str, ...]

    @property
    def kind(self) -> str:
        """How the words after the flag become one Hydra value: bool, scalar, list, pairs, dict or any."""
        t = self.seed_type
        if t in ("bool", "{True,False}"):
            return "bool"
        if t == "Dict":
            return "dict"
        if t == "Any":
            return "any"
        if "STR FLOAT" in t:
            return "pairs"
        if "..." in t or "List" in t or re.fullmatch(r"\[?(\w+) \1\]?", t):
            return "list"
        return "scalar"


def _catalogue(text: str) -> dict[str, SeedFlag]:
    flags = {}
    for line in text.strip().splitlines():
        spec, _, owners = line.partition(" ; ")
        flag, _, seed_type = spec.partition(" ")
        flags[flag] = SeedFlag(flag, seed_type.strip(), tuple(owners.split()))
    return flags


LEROBOT = _catalogue(_LEROBOT)
NERFSTUDIO = _catalogue(_NERFSTUDIO)
SEED_FLAGS = {**LEROBOT, **NERFSTUDIO}
# tyro accepts `--pipeline.model.hidden_dim` for `--pipeline.model.hidden-dim`; so do we, both ways.
_SPELLINGS = {flag.replace("_", "-"): flag for flag in SEED_FLAGS}


@dataclass(frozen=True)
class Rule:
    """Where the seed flags equal to `prefix`, or under it when it ends with ".", go.

    target: the Hydra key; under a "." prefix the rest of the flag is appended with dashes turned
        into underscores. None: not supported, `note` says why.
    group: the value picks an option of the config group `target`; `values` maps flag values to
        options where they differ (`--wandb.enable=true` -> `logger=mlflow`).
    note: for a supported target, the feature that a missing key or option awaits (docs/FLAGS.md).
    """

    prefix: str
    target: str | None
    note: str = ""
    group: bool = False
    values: tuple[tuple[str, str], ...] = ()


PRESET_FLAG = "--use_policy_training_preset"
LOAD_CONFIG_FLAG = "--load-config"
_NERF = "nerfacto"
VIS_FLAG = "--vis"
SHARE_URL_FLAG = "--viewer.make-share-url"  # False (nerfstudio's default) changes nothing; True is refused
# nerfstudio's --vis names the viewer and the experiment tracker at once: value -> (viewer, logger) options.
# MLflow stands in for wandb, tensorboard and comet (one tracker for both families); there is one viewer.
VIS_CHOICES = {
    "viewer": ("web", "none"), "viewer_legacy": ("web", "none"),
    **{tracker: ("none", "mlflow") for tracker in ("mlflow", "wandb", "tensorboard", "comet")},
    **{f"viewer+{tracker}": ("web", "mlflow") for tracker in ("mlflow", "wandb", "tensorboard", "comet")},
}
_SHARE_URL = ("it needs the internet: viser's share URL tunnels the viewer through a relay server; reach a remote "
              "viewer over SSH instead (ssh -L 7007:127.0.0.1:7007 <host>, then http://127.0.0.1:7007); "
              "False, nerfstudio's default, is accepted and changes nothing")
_FROM_DATASET = "filled from the dataset's features when the policy is built, never by hand"


def _config_file(group: str) -> str:
    return f"a draccus config file; write conf/{group}/<name>.yaml and pick it with {group}=<name>"


RULES: tuple[Rule, ...] = (
    # LeRobot (draccus: --a.b=value)
    Rule("--config_path", None, _config_file("experiment")),
    *(Rule(f"--{g}", None, _config_file(g)) for g in ("dataset", "env", "policy", "optimizer", "scheduler", "eval")),
    *(Rule(f"--{g}", None, _config_file("experiment")) for g in ("offline", "online")),
    Rule("--wandb", None, _config_file("logger")),
    Rule("--image_transforms", None,
         "a draccus config file; set dataset.image_transforms.* in conf/dataset/<name>.yaml"),
    Rule("--policy.type", "policy", group=True),
    Rule("--env.type", "env", group=True),
    Rule("--optimizer.type", "optimizer", group=True),
    Rule("--scheduler.type", "scheduler", group=True),
    # A policy's training preset lives in conf/optimizer|scheduler/preset/<policy>.yaml here.
    Rule("--policy.optimizer_lr", "optimizer.lr"),
    Rule("--policy.optimizer_betas", "optimizer.betas"),
    Rule("--policy.optimizer_eps", "optimizer.eps"),
    Rule("--policy.optimizer_weight_decay", "optimizer.weight_decay"),
    Rule("--policy.scheduler_warmup_steps", "scheduler.num_warmup_steps"),
    Rule("--policy.scheduler_name", "scheduler.name"),
    Rule("--policy.scheduler_decay_steps", "scheduler.num_decay_steps"),
    Rule("--policy.scheduler_decay_lr", "scheduler.decay_lr"),
    Rule("--policy.input_features", None, _FROM_DATASET),
    Rule("--policy.output_features", None, _FROM_DATASET),
    Rule("--policy.", "policy."),
    Rule("--env.", "env."),
    Rule("--dataset.", "dataset."),
    Rule("--eval.", "eval."),
    Rule("--optimizer.", "optimizer."),
    Rule("--scheduler.", "scheduler."),
    Rule("--offline.steps", "steps"),
    Rule("--online.", "online."),
    Rule("--output_dir", "hydra.run.dir"),
    Rule("--job_name", "job_name"),
    Rule("--resume", "resume"),
    Rule("--device", "machine.device_type"),
    Rule("--seed", "seed"),
    *(Rule(f"--{k}", k) for k in ("use_amp", "num_workers", "batch_size", "eval_freq", "log_freq",
                                  "save_checkpoint", "save_freq")),
    Rule("--wandb.enable", "logger", group=True, values=(("true", "mlflow"), ("false", "none"))),
    Rule("--wandb.project", "logger.experiment_name"),
    Rule("--wandb.notes", "logger.run_name"),
    Rule("--wandb.entity", None,
         "MLflow has no entities; pick the server with logger.tracking_uri or $MLFLOW_TRACKING_URI"),
    Rule("--wandb.disable_artifact", None,
         "checkpoints are never uploaded to MLflow (only the config and eval videos), so there is nothing to disable"),
    # nerfstudio (tyro: --a.b-c value)
    Rule("--output-dir", "hydra.run.dir"),
    Rule("--method-name", "model", _NERF, group=True),
    Rule("--experiment-name", "job_name"),
    Rule("--project-name", "logger.experiment_name"),
    Rule("--timestamp", None, "run directories are already timestamped by hydra.run.dir"),
    Rule(VIS_FLAG, None, "translated by vis_overrides"),
    Rule("--viewer.make-share-url", None, _SHARE_URL),
    Rule("--viewer.", "viewer.", _NERF),
    Rule("--data", "data.data", _NERF),
    Rule("--prompt", "model.prompt", _NERF),
    # nerfstudio's run options: root keys of both families
    *(Rule(f"--{k}", k.replace("-", "_")) for k in (
        "relative-model-dir", "save-only-latest-checkpoint", "log-gradients", "use-grad-scaler")),
    # a saved config.yaml becomes the overrides that compose it again (load_config_overrides)
    Rule(LOAD_CONFIG_FLAG, None, "translated by load_config_overrides"),
    # warm starts: root keys of both families (a new run from another run's checkpoint)
    *(Rule(f"--{k}", k.replace("-", "_")) for k in ("load-dir", "load-step", "load-checkpoint", "load-scheduler")),
    Rule("--steps-per-save", "save_freq"),
    *(Rule(f"--steps-per-eval-{k}", f"eval.steps_per_eval_{k.replace('-', '_')}", _NERF)
      for k in ("batch", "image", "all-images")),
    Rule("--max-num-iterations", "steps"),
    Rule("--mixed-precision", "use_amp"),
    Rule("--gradient-accumulation-steps", "gradient_accumulation_steps"),
    Rule("--machine.", "machine."),
    Rule("--logging.steps-per-log", "log_freq"),
    Rule("--logging.local-writer.enable", "progress_bar"),
    Rule("--logging.", None, "the MLflow logger has no such setting (log_freq sets how often metrics are logged)"),
    Rule("--pipeline.datamanager.data", "data.data", _NERF),
    Rule("--pipeline.datamanager.camera-optimizer.optimizer.", "optimizer.camera_opt.", _NERF),
    Rule("--pipeline.datamanager.camera-optimizer.scheduler.", "scheduler.camera_opt.", _NERF),
    Rule("--pipeline.datamanager.camera-optimizer.", "model.camera_optimizer.", _NERF),
    Rule("--pipeline.datamanager.", "data.", _NERF),
    Rule("--pipeline.model.", "model.", _NERF),
    Rule("--optimizers.fields.optimizer.", "optimizer.fields.", _NERF),
    Rule("--optimizers.fields.scheduler.", "scheduler.fields.", _NERF),
    Rule("--optimizers.proposal-networks.optimizer.", "optimizer.proposal_networks.", _NERF),
    Rule("--optimizers.proposal-networks.scheduler.", "scheduler.proposal_networks.", _NERF),
)
_EXACT = {r.prefix: r for r in RULES if not r.prefix.endswith(".")}
_PREFIXES = sorted((r for r in RULES if r.prefix.endswith(".")), key=lambda r: -len(r.prefix))


def rule_for(flag: str) -> Rule | None:
    """The rule of a seed flag: its exact entry, else the longest "." prefix it falls under."""
    return _EXACT.get(flag) or next((r for r in _PREFIXES if flag.startswith(r.prefix)), None)


def target_key(flag: str, rule: Rule) -> str | None:
    if rule.target is None or not rule.prefix.endswith("."):
        return rule.target
    return rule.target + flag[len(rule.prefix):].replace("-", "_")


# Hydra's own flags and how many words each takes ("?": an optional one among _HYDRA_INFO).
HYDRA_FLAGS = {
    "--help": 0, "-h": 0, "--hydra-help": 0, "--version": 0, "--resolve": 0, "--run": 0, "-r": 0,
    "--multirun": 0, "-m": 0, "--shell-completion": 0, "-sc": 0, "--cfg": 1, "-c": 1, "--package": 1,
    "-p": 1, "--config-path": 1, "-cp": 1, "--config-name": 1, "-cn": 1, "--config-dir": 1, "-cd": 1,
    "--experimental-rerun": 1, "--info": "?", "-i": "?",
}
_HYDRA_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_OVERRIDE = re.compile(r"(\+\+?)?[A-Za-z_][\w\-/@.]*=|~[A-Za-z_]")
_NUMBER = re.compile(r"-(\d|\.\d|inf$|nan$)", re.IGNORECASE)
_SAFE_IN_CONTAINER = re.compile(r"[\w\-./@+$%*?|]+")


def translate_argv(args: list[str]) -> tuple[list[str], list[str]]:
    """Rewrites seed flags and our keys in flag form (`--batch_size=8`) into Hydra overrides.

    Hydra syntax passes through untouched. Returns the new arguments and notes for stderr; raises
    ValueError with one line for an unknown flag, a flag not supported yet, or a malformed value.
    """
    out: list[str] = []
    notes: list[str] = []
    translated = False
    multirun = any(a in ("-m", "--multirun") for a in args)
    i = 0
    while i < len(args):
        arg = args[i]
        n = hydra_flag_words(args, i)
        if n or not arg.startswith("--") or arg == "--":
            out += args[i:i + max(n, 1)]
            i += max(n, 1)
            continue
        flag, has_value, inline = arg.partition("=")
        seed, rule, key, kind = _resolve(flag)
        if has_value:
            words, i = [inline], i + 1
        else:
            words, i = _take_words(args, i + 1, flag, kind)
        translated = True
        if seed == PRESET_FLAG:
            notes.append(_training_preset(_bool(flag, words), args))
        elif seed == LOAD_CONFIG_FLAG:
            overrides, note = load_config_overrides(words[0])
            out += overrides
            notes.append(note)
        elif seed == SHARE_URL_FLAG:
            if _bool(flag, words) == "true":
                raise ValueError(f"{flag} is not supported yet: {_SHARE_URL} (docs/FLAGS.md lists every seed flag)")
            notes.append(f"{flag}=False is how this viewer always runs (no share URL); nothing to add")
        elif seed == VIS_FLAG:
            overrides, note = vis_overrides(words[0])
            out += overrides
            notes += [note] if note else []
        elif rule is not None and rule.group:
            value = _bool(flag, words) if rule.values else _word(words[0], multirun)
            out.append(_checked(flag, f"{rule.target}={dict(rule.values).get(value, value)}"))
        else:
            out.append(_checked(flag, f"{key}={_value(flag, kind, words, multirun)}"))
    if translated:
        notes.append(" ".join(["translated: python src/train.py", *map(shell_quote, out)]))
    return out, notes


def vis_overrides(value: str) -> tuple[list[str], str | None]:
    """nerfstudio's `--vis <value>`: the viewer and logger options it names, and a note where the tracker named
    is MLflow here or the viewer is the one viewer there is."""
    if value not in VIS_CHOICES:
        raise ValueError(f"{VIS_FLAG} {value} is not one of {', '.join(VIS_CHOICES)}")
    viewer, logger = VIS_CHOICES[value]
    named = value.removeprefix("viewer+")
    note = None
    if named in ("wandb", "tensorboard", "comet"):
        note = f"{VIS_FLAG} {value}: MLflow tracks the run here (logger=mlflow)"
    elif value == "viewer_legacy":
        note = f"{VIS_FLAG} {value}: there is one viewer here, the web viewer (viewer=web)"
    return [f"viewer={viewer}", f"logger={logger}"], note


# Keys a pipeline fills in when it builds (not settable by an override): left out of --load-config's overrides.
_FILLED_AT_BUILD = ("policy.input_features", "policy.output_features")


def load_config_overrides(path: str) -> tuple[list[str], str]:
    """nerfstudio's `--load-config <config.yml>` trains with a saved config instead of composing one. Here a
    `config.yaml` that train.py wrote (`<run>/config.yaml` or a checkpoint's; a folder means its
    config.yaml) becomes the overrides that compose it again: the run's group choices (the checkpoint's
    `choices.yaml`) and every value of the file that differs from what those choices compose to. Flags and
    overrides after it apply on top (Hydra keeps a key's last value). Returns (overrides, note). Both files
    are data (config.saved): the choices must be options of conf/, and a key that names code or an
    interpolation is refused."""
    from omegaconf import OmegaConf

    from config.saved import read_choices, read_yaml_mapping, refuse_code_and_interpolations

    if path in ("None", "null"):
        return [], f"{LOAD_CONFIG_FLAG} None: nothing to load"
    file = Path(path).expanduser()
    file = file / "config.yaml" if file.is_dir() else file
    if not file.is_file():
        raise ValueError(f"{LOAD_CONFIG_FLAG}: no config at {file}; give the config.yaml of a run "
                         "(<run>/config.yaml) or of a checkpoint (<run>/checkpoints/<step>/config.yaml)")
    saved = read_yaml_mapping(file)
    model_dir = saved.get("relative_model_dir") or "checkpoints"
    candidates = [file.parent / "choices.yaml", file.parent / str(model_dir) / "last" / "choices.yaml"]
    choices_file = next((c for c in candidates if c.is_file()), None)
    if choices_file is None:
        raise ValueError(f"{LOAD_CONFIG_FLAG}: no choices.yaml beside {file} or in its run's {model_dir}/last/ "
                         "(the config groups it was composed from); give a config.yaml written by src/train.py "
                         "of a run that saved a checkpoint")
    choices = read_choices(choices_file)
    groups = [f"{g}={c}" for g, c in choices.items() if c is not None]
    if choices.get("policy") is None:  # a neural-field run: no policy group (`~policy` leaves no choice)
        groups.append("~policy")
    try:
        trusted = _composed(groups)
    except Exception as e:  # a choice that no longer exists, a config that does not compose
        raise ValueError(f"{LOAD_CONFIG_FLAG}: the group choices of {choices_file} ({' '.join(groups)}) do not "
                         f"compose: {' '.join(str(e).split())[:300]}") from None
    refuse_code_and_interpolations(saved, file, OmegaConf.create(trusted))
    composed = _leaves(trusted)
    values, unknown = [], []
    for key, value in _leaves(saved).items():
        if key == "resume" or key.startswith(_FILLED_AT_BUILD):
            continue
        if value == {} and any(k.startswith(f"{key}.") for k in composed):
            continue  # a group node whose only key was its `_target_` (config.yaml holds values only)
        if key not in composed:
            unknown.append(key)
        elif composed[key] != value:
            values.append(_checked(LOAD_CONFIG_FLAG, f"{key}={_format(LOAD_CONFIG_FLAG, value)}"))
    if unknown:
        raise ValueError(f"{LOAD_CONFIG_FLAG}: {file} has keys that the current conf/ does not "
                         f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}); it was written by "
                         "another version: remove them from a copy of the file and load that")
    note = (f"{LOAD_CONFIG_FLAG} {file}: its group choices ({choices_file}) and the {len(values)} values that "
            "differ from what they compose to; flags and overrides after it apply on top")
    return [*groups, *values], note


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value for every leaf of a nested mapping (lists and empty mappings are leaves)."""
    if isinstance(node, dict) and node:
        out: dict[str, object] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _composed(overrides: list[str]) -> dict:
    """train.yaml composed with `overrides`, resolved as a run resolves it (Hydra's own node left out)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from config.store import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        try:
            return OmegaConf.to_container(body, resolve=True, throw_on_missing=False)
        except Exception:  # an interpolation that only resolves in a run: compare it unresolved
            return OmegaConf.to_container(body, resolve=False)


def names_nerfacto(args: list[str]) -> bool:
    """True when a flag of `args` has a key only a neural-field run has (ns-train nerfacto's
    `--pipeline.*` and the like), so a command of nerfstudio's flags alone means `model=nerfacto`."""
    for arg in args:
        if not arg.startswith("--"):
            continue
        flag = arg.partition("=")[0]
        seed = flag if flag in SEED_FLAGS else _SPELLINGS.get(flag.replace("_", "-"))
        if seed == VIS_FLAG:
            return True
        rule = rule_for(seed) if seed is not None and seed not in (PRESET_FLAG, LOAD_CONFIG_FLAG) else None
        if rule is not None and rule.note == _NERF:
            return True
    return False


def shell_quote(arg: str) -> str:
    """Quotes an argument for a shell, preferring double quotes so Hydra's single quotes stay readable."""
    if arg and not re.search(r"[^\w@%+=:,./\-]", arg):
        return arg
    if "'" in arg and not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def hydra_flag_words(args: list[str], i: int) -> int:
    """How many words Hydra's flag at args[i] spans (0: not one of Hydra's flags)."""
    name, has_value, _ = args[i].partition("=")
    if name not in HYDRA_FLAGS:
        return 0
    takes = HYDRA_FLAGS[name]
    if has_value or takes == 0:
        return 1
    if takes == "?":
        return 2 if i + 1 < len(args) and args[i + 1] in _HYDRA_INFO else 1
    return min(2, len(args) - i)


def _resolve(flag: str) -> tuple[str | None, Rule | None, str | None, str]:
    """(seed flag, its rule, Hydra key, value kind) of a flag; raises ValueError if it has none."""
    seed = flag if flag in SEED_FLAGS else _SPELLINGS.get(flag.replace("_", "-"))
    if seed is not None:
        if seed == PRESET_FLAG:
            return seed, None, None, "bool"
        if seed in (LOAD_CONFIG_FLAG, VIS_FLAG):
            return seed, None, None, "scalar"
        if seed == SHARE_URL_FLAG:
            return seed, None, None, "bool"
        rule = rule_for(seed)
        key = target_key(seed, rule)
        if key is None:
            raise ValueError(f"{flag} is not supported yet: {rule.note} (docs/FLAGS.md lists every seed flag)")
        return seed, rule, key, SEED_FLAGS[seed].kind
    keys = config_keys()
    for key in (flag[2:], flag[2:].replace("-", "_")):
        if key in keys:
            return None, None, key, keys[key]
    ours = [f"--{k}" for k in keys if k != "hydra" and not k.startswith("hydra.")]
    known = list(dict.fromkeys([f for f in SEED_FLAGS if f != "--help"] + ours))
    near = difflib.get_close_matches(flag, known, n=3, cutoff=0.0)
    raise ValueError(f"unknown flag {flag}; did you mean {', '.join(near)}?")


def _take_words(args: list[str], j: int, flag: str, kind: str) -> tuple[list[str], int]:
    """The words after a flag that belong to it: one, or for lists all up to the next flag or override."""
    def is_flag(word: str) -> bool:
        return word.startswith("-") and len(word) > 1 and not _NUMBER.match(word)

    if kind == "bool":  # a bare flag is true; a word that is no flag or override is its value (checked)
        if j < len(args) and not is_flag(args[j]) and not _OVERRIDE.match(args[j]):
            return [args[j]], j + 1
        return [], j
    if kind in ("scalar", "dict"):
        if j < len(args) and not is_flag(args[j]):
            return [args[j]], j + 1
        raise ValueError(f"{flag} needs a value")
    words = []
    while j < len(args) and not is_flag(args[j]) and not _OVERRIDE.match(args[j]):
        words.append(args[j])
        j += 1
    if not words:
        raise ValueError(f"{flag} needs one or more values")
    return words, j


def _training_preset(use_preset: str, args: list[str]) -> str:
    """LeRobot's switch between a policy's preset and an explicit optimizer: here an optimizer choice is the switch."""
    if use_preset == "true":
        return (f"{PRESET_FLAG}=true is the default here (conf/optimizer/preset/<policy>.yaml and "
                "conf/scheduler/preset/<policy>.yaml); nothing to add")
    if any(a.partition("=")[0] == "--optimizer.type" or re.match(r"(\+\+?)?optimizer=", a) for a in args):
        return f"{PRESET_FLAG}=false: the optimizer you picked replaces the policy's preset"
    raise ValueError(f"{PRESET_FLAG}=false needs an optimizer: pick optimizer={'|'.join(_options('optimizer'))}"
                     f" and scheduler={'|'.join(_options('scheduler'))}")


def _options(group: str) -> list[str]:
    """The options of a config group that a user picks by name (presets follow the policy instead)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _bool(flag: str, words: list[str]) -> str:
    word = words[0] if words else "true"
    if word.lower() not in ("true", "false"):
        raise ValueError(f"{flag} takes true or false, got {word!r}")
    return word.lower()


def _value(flag: str, kind: str, words: list[str], multirun: bool) -> str:
    """One Hydra value from a flag's words, by the flag's kind."""
    if kind == "bool":
        return _bool(flag, words)
    if kind == "scalar":
        return _word(words[0], multirun)
    if kind == "dict":
        return _mapping(flag, words[0])
    if len(words) == 1 and words[0] in ("None", "null"):
        return "null"
    if len(words) == 1 and isinstance(_hydra_value(words[0]), (list, dict)):
        return words[0]
    if kind == "any" and len(words) == 1:
        return _word(words[0], multirun)
    if kind == "pairs":
        if len(words) % 2:
            raise ValueError(f"{flag} takes name value pairs, e.g. {flag} near_plane 2.0 far_plane 6.0")
        pairs = zip(words[::2], words[1::2])
        return "{" + ",".join(f"{_dict_key(flag, k)}:{_element(v)}" for k, v in pairs) + "}"
    return "[" + ",".join(_element(w) for w in words) + "]"


def _word(raw: str, multirun: bool = False) -> str:
    """A command-line word as a Hydra value: typed by Hydra's grammar, quoted where it would change."""
    if raw in ("None", "null"):
        return "null"
    if raw.lower() in ("true", "false"):
        return raw.lower()
    override = _parse(raw)
    if override is not None:
        if multirun and override.is_sweep_override():
            return raw
        value = override.value()
        if not override.is_sweep_override() and (
                value == raw if isinstance(value, str) else isinstance(value, (int, float, type(None)))):
            return raw
    return _quote(raw)


def _element(raw: str) -> str:
    """A word inside a list or dict, where commas, colons and spaces would split or change it."""
    value = _word(raw)
    return value if value != raw or _SAFE_IN_CONTAINER.fullmatch(raw) else _quote(raw)


def _mapping(flag: str, raw: str) -> str:
    """A Dict flag's value: Hydra's `{a:1}` and null pass through; JSON (`{"a": 1e-4}`), else YAML, is rewritten."""
    if raw in ("None", "null"):
        return "null"
    if isinstance(_hydra_value(raw), dict):
        return raw
    import json

    import yaml

    try:
        data = json.loads(raw)
    except ValueError:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError:
            data = None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} takes a mapping such as '{{\"VISUAL\": \"MEAN_STD\"}}', got {raw!r}")
    return _format(flag, data)


def _format(flag: str, data: object) -> str:
    """A parsed YAML value in Hydra's override grammar; strings stay strings."""
    if data is None:
        return "null"
    if isinstance(data, bool):
        return str(data).lower()
    if isinstance(data, (int, float)):
        return repr(data)
    if isinstance(data, (list, tuple)):
        return "[" + ",".join(_format(flag, v) for v in data) + "]"
    if isinstance(data, dict):
        return "{" + ",".join(f"{_dict_key(flag, k)}:{_format(flag, v)}" for k, v in data.items()) + "}"
    text = str(data)
    return text if _SAFE_IN_CONTAINER.fullmatch(text) and _hydra_value(text) == text else _quote(text)


def _dict_key(flag: str, key: object) -> str:
    text = str(key)
    if not _SAFE_IN_CONTAINER.fullmatch(text):
        raise ValueError(f"{flag}: the key {text!r} cannot be written in a Hydra override; set it in a YAML file")
    return text


def _quote(text: str) -> str:
    """Quotes a string for Hydra: backslashes before a quote or at the end are escaped, others are literal."""
    quote = "'" if "'" not in text or '"' in text else '"'
    body = re.sub(rf"(\\*){quote}", lambda m: m.group(1) * 2 + "\\" + quote, text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return quote + body + quote


@functools.lru_cache(maxsize=1)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _parse(value: str):
    """The parsed override `k=<value>`, or None if it is not valid Hydra syntax."""
    try:
        return _parser().parse_override(f"k={value}")
    except Exception:
        return None


def _hydra_value(value: str) -> object:
    override = _parse(value)
    return None if override is None or override.is_sweep_override() else override.value()


def _checked(flag: str, override: str) -> str:
    """Guards against writing an override that Hydra cannot read, naming the flag instead of a parse trace."""
    try:
        _parser().parse_override(override)
    except Exception as e:
        raise ValueError(f"cannot translate {flag} into a Hydra override ({override}): {' '.join(str(e).split())}")
    return override


def option_exists(group: str, choice: str) -> bool:
    """Whether `group=choice` names a config: a YAML file under conf/ or a ConfigStore entry."""
    if (CONF_DIR / group / f"{choice}.yaml").is_file():
        return True
    from hydra.core.config_store import ConfigStore

    node = ConfigStore.instance().repo
    for part in f"{group}/{choice}.yaml".split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _root_overrides(picks: dict[str, str]) -> list[str]:
    """Overrides that compose train.yaml with its default options (or `picks`), leaving out each group
    whose option has no config yet, so one missing file does not hide every other key. Interpolated
    choices (`preset/${policy}`) are spelt out, as Hydra cannot resolve them once `policy` is left out."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml")).get("defaults", [])
    entries = dict(next(iter(d.items())) for d in defaults if isinstance(d, dict))
    chosen: dict[str, str] = {}
    overrides = []
    for group, choice in {**entries, **picks}.items():
        if choice is None or not (CONF_DIR / group).is_dir():
            continue
        choice = chosen[group] = re.sub(r"\$\{(\w+)\}", lambda m: chosen.get(m.group(1), m.group(0)), str(choice))
        add = "" if group in entries else "+"
        if option_exists(group, choice):
            overrides.append(f"{add}{group}={choice}")
        elif group in entries:
            overrides.append(f"~{group}")
    return overrides


@functools.lru_cache(maxsize=None)
def config_keys(*picks: str) -> dict[str, str]:
    """Every key of the composed root config (hydra.* included) -> its value kind (bool, scalar, list, dict).

    `picks` are `group=option` choices over the defaults. Empty if the config does not compose at all:
    a broken config must not break the translation of seed flags.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from config.store import register_schemas

    try:
        register_schemas()
        overrides = _root_overrides(dict(p.split("=", 1) for p in picks))
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    except Exception:
        return {}
    keys: dict[str, str] = {}

    def walk(node: object, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            key = f"{prefix}{k}"
            keys[key] = ("dict" if isinstance(v, dict) else "list" if isinstance(v, list)
                         else "bool" if isinstance(v, bool) else "scalar")
            walk(v, key + ".")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return keys

