"""Scripted demonstrations recorded into a LeRobotDataset: what the policies train on when no
dataset hub is reachable, and what `dataset=pusht` builds on its first run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.lerobot_dataset import DatasetError
from data.lerobot_writer import CODEBASE_VERSION, CODEBASE_VERSIONS, LeRobotDatasetWriter

log = logging.getLogger(__name__)

PUSHT_TASK = "Push the T-shaped block onto the T-shaped target."
EXPERTS = ("pusht", "aloha_transfer_cube", "aloha_insertion", "xarm_lift")


def home() -> Path:
    """The project's cache ($HYDRABOT_HOME, default ~/.cache/hydrabot)."""
    return Path(os.environ.get("HYDRABOT_HOME", "~/.cache/hydrabot")).expanduser()


def dataset_root(dataset_cfg) -> Path:
    if dataset_cfg.root is not None and not isinstance(dataset_cfg.root, str):
        raise DatasetError(f"dataset.root is a list but dataset.repo_id={dataset_cfg.repo_id} is one name; give one "
                           "root, or list the repo_ids too")
    return Path(dataset_cfg.root).expanduser() if dataset_cfg.root else home() / "datasets" / dataset_cfg.repo_id


def is_multi(dataset_cfg) -> bool:
    """True when `dataset.repo_id` is a list (several datasets concatenated)."""
    return not isinstance(dataset_cfg.repo_id, str)


def dataset_roots(dataset_cfg) -> list[Path]:
    """Roots of a `repo_id` list, by one rule per form of `dataset.root`:
    null -> $HYDRABOT_HOME/datasets/<repo_id> (where a single repo_id lives too);
    one path -> <root>/<repo_id> (a parent folder, as LeRobot's MultiLeRobotDataset takes it);
    a list -> those roots, one per repo_id, in order."""
    repo_ids = [str(r) for r in dataset_cfg.repo_id]
    if not repo_ids:
        raise DatasetError("dataset.repo_id=[] names no dataset; give one name or a list of names")
    root = dataset_cfg.root
    if root is None:
        return [home() / "datasets" / r for r in repo_ids]
    if isinstance(root, str):
        return [Path(root).expanduser() / r for r in repo_ids]
    roots = [Path(str(r)).expanduser() for r in root]
    if len(roots) != len(repo_ids):
        raise DatasetError(f"dataset.root lists {len(roots)} roots for {len(repo_ids)} repo_ids; give one root per "
                           "repo_id, one parent folder, or null")
    return roots


def ensure_datasets(dataset_cfg) -> list[Path]:
    """The roots of a `repo_id` list, each of which must hold a dataset already: `dataset.demos`
    records one dataset, so a list is never recorded (record each with src/record.py)."""
    roots = dataset_roots(dataset_cfg)
    for repo_id, root in zip(dataset_cfg.repo_id, roots):
        if not (root / "meta" / "info.json").is_file():
            raise DatasetError(
                f"no LeRobotDataset at {root} (meta/info.json missing) for {repo_id}; with a repo_id list nothing is "
                f"recorded: record it (python src/record.py root={root}) or set dataset.root")
    return roots


def ensure_dataset(dataset_cfg) -> Path:
    """The dataset's root, recording it first when it is absent and the config says how."""
    root = dataset_root(dataset_cfg)
    if (root / "meta" / "info.json").is_file():
        return root
    if dataset_cfg.demos is None:
        if not dataset_cfg.local_files_only:
            return download(dataset_cfg.repo_id, root, dataset_cfg.revision)
        raise DatasetError(
            f"no LeRobotDataset at {root} (meta/info.json missing); put a local copy of {dataset_cfg.repo_id} there "
            "(dataset.root=<path>), fetch it from the Hugging Face Hub with dataset.local_files_only=false, or record "
            "scripted demos (dataset=pusht)")
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} exists but holds no meta/info.json; it is not a LeRobotDataset. Remove it, "
                           "or point dataset.root at a dataset")
    record(root, dataset_cfg.demos)
    return root


def folder_to_write(dataset_cfg) -> Path | None:
    """Where ensure_dataset would write (recording and download both fill a temporary sibling of
    the dataset's root, renamed into place), or None when it writes nothing: the dataset is there,
    or absent with nothing that says how to make it; a repo_id list is never written."""
    if is_multi(dataset_cfg):
        return None
    root = dataset_root(dataset_cfg)
    if (root / "meta" / "info.json").is_file() or (dataset_cfg.demos is None and dataset_cfg.local_files_only):
        return None
    return root.parent


def download(repo_id: str, root: Path, revision: str | None) -> Path:
    """LeRobot's `local_files_only=false`: fetch the dataset from the Hugging Face Hub into a
    temporary sibling of `root`, renamed into place once complete (an interrupted or refused
    download leaves nothing at `root`)."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} exists but holds no meta/info.json, so {repo_id} is not downloaded over it; "
                           "remove it or set dataset.root to an empty folder")
    tmp = root.with_name(f".{root.name}.download")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloading %s (revision %s) from the Hugging Face Hub into %s", repo_id, revision or "main", root)
    try:
        huggingface_hub.snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=tmp)
        if not (tmp / "meta" / "info.json").is_file():
            raise DatasetError(f"{repo_id} (revision {revision or 'main'}) downloaded, but it has no meta/info.json: "
                               "it is not a LeRobotDataset; pick a LeRobot dataset repo_id or dataset.revision")
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as e:
        raise DatasetError(f"could not download {repo_id} from the Hugging Face Hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); check the repo_id and the network, or put a "
                           f"local copy at {root} (dataset.root=<path>)") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def record(root: Path, demos_cfg, progress: bool = True) -> Path:
    if demos_cfg.expert not in EXPERTS:
        raise DatasetError(f"dataset.demos.expert={demos_cfg.expert!r} has no scripted expert; "
                           f"available: {', '.join(EXPERTS)}")
    if demos_cfg.codebase_version not in CODEBASE_VERSIONS:
        raise DatasetError(f"dataset.demos.codebase_version={demos_cfg.codebase_version!r} cannot be written; "
                           f"use one of {', '.join(CODEBASE_VERSIONS)}")
    kwargs = dict(n_episodes=demos_cfg.n_episodes, seed=demos_cfg.seed, keep_failed=demos_cfg.keep_failed,
                  use_videos=demos_cfg.use_videos, codebase_version=demos_cfg.codebase_version, progress=progress)
    if demos_cfg.expert == "pusht":
        return record_pusht(root, **kwargs)
    return record_mujoco(root, demos_cfg.expert, **kwargs)


def _keep_or_discard(writer: LeRobotDatasetWriter, keep: bool, task: str, bar) -> int:
    """Saves the episode just recorded (returns 1) or drops its frames (returns 0)."""
    if not keep:
        writer.discard_episode()
        return 0
    writer.save_episode(task=task)
    bar.update(1)
    return 1


def pusht_features(use_videos: bool, image_size: int = 96) -> dict:
    return {
        "observation.image": {"dtype": "video" if use_videos else "image", "shape": [image_size, image_size, 3],
                              "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }


def record_pusht(root: Path, n_episodes: int, seed: int = 0, keep_failed: bool = False, use_videos: bool = True,
                 max_attempts_factor: int = 3, progress: bool = True, codebase_version: str = CODEBASE_VERSION) -> Path:
    """Runs the scripted PushT expert until `n_episodes` are kept (only successes unless
    `keep_failed`), seeds `seed, seed+1, ...`, and writes them as one LeRobotDataset at `root`."""
    from envs.factory import import_env_package, make_gym_env
    from envs.pusht_expert import PushTExpert

    import_env_package("pusht")
    env = make_gym_env("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", max_episode_steps=300)
    writer = LeRobotDatasetWriter(root, fps=env.metadata.get("render_fps", 10), features=pusht_features(use_videos),
                                  robot_type="2d pointer", use_videos=use_videos, codebase_version=codebase_version)
    expert = PushTExpert()
    kept, attempts = 0, 0
    bar = tqdm(total=n_episodes, desc=f"recording PushT demos into {root}", unit="episode", disable=not progress)
    try:
        while kept < n_episodes:
            if attempts >= max_attempts_factor * n_episodes:
                raise DatasetError(f"the PushT expert succeeded in only {kept} of {attempts} episodes; "
                                   "set dataset.demos.keep_failed=true or lower dataset.demos.n_episodes")
            obs, _ = env.reset(seed=seed + attempts)
            attempts += 1
            expert.reset()
            success = False
            for _ in range(300):
                action = expert.act(env.unwrapped)
                next_obs, reward, terminated, truncated, info = env.step(action)
                success = bool(info.get("is_success", terminated))
                writer.add_frame({
                    "observation.image": obs["pixels"],
                    "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
                    "action": np.asarray(action, dtype=np.float32),
                    "next.reward": np.float32(reward),
                    "next.done": bool(terminated or truncated),
                    "next.success": success,
                })
                obs = next_obs
                if terminated or truncated:
                    break
            kept += _keep_or_discard(writer, success or keep_failed, PUSHT_TASK, bar)
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        env.close()
    log.info("recorded %d PushT episodes (%d attempts) into %s", kept, attempts, root)
    return root


# ----------------------------------------------------------------------------- MuJoCo experts
ALOHA_MOTORS = [f"{side}_{joint}" for side in ("left", "right") for joint in
                ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")]
MUJOCO_EXPERTS = {
    # expert: (env type, gym task, episode length, fps, robot type, task text, image key, image shape, motors)
    "aloha_transfer_cube": ("aloha", "AlohaTransferCube-v0", 400, 50, "aloha",
                            "Pick up the cube with the right arm and transfer it to the left arm.",
                            "observation.images.top", [480, 640, 3], ALOHA_MOTORS),
    "aloha_insertion": ("aloha", "AlohaInsertion-v0", 400, 50, "aloha",
                        "Insert the peg into the socket.", "observation.images.top", [480, 640, 3], ALOHA_MOTORS),
    "xarm_lift": ("xarm", "XarmLift-v0", 200, 15, "xarm", "Pick up the cube and lift it.",
                  "observation.image", [84, 84, 3], ["x", "y", "z", "gripper"]),
}


def mujoco_features(expert: str, use_videos: bool) -> dict:
    _, _, _, _, _, _, image_key, image_shape, motors = MUJOCO_EXPERTS[expert]
    return {
        image_key: {"dtype": "video" if use_videos else "image", "shape": list(image_shape),
                    "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [len(motors)], "names": {"motors": list(motors)}},
        "action": {"dtype": "float32", "shape": [len(motors)], "names": {"motors": list(motors)}},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }


def make_expert_env(expert: str, render: bool = True):
    """The gym env an expert acts in (``pixels_agent_pos``, LeRobot's image sizes) and the expert.

    ``render=False`` skips camera rendering, for success-rate runs (xarm: ``obs_type="state"``;
    aloha: black frames); gym-aloha otherwise renders only the ``top`` camera it returns (it would
    render two more). The experts read the simulator's state, never the observation."""
    from envs.factory import import_env_package, make_gym_env

    env_type, task, length, _, _, _, _, _, _ = MUJOCO_EXPERTS[expert]
    import_env_package(env_type)
    kwargs = {"obs_type": "pixels_agent_pos", "max_episode_steps": length}
    if env_type == "xarm":
        kwargs.update(observation_width=84, observation_height=84)
        if not render:
            kwargs["obs_type"] = "state"
    env = make_gym_env(f"gym_{env_type}/{task}", disable_env_checker=True, **kwargs)
    if env_type == "aloha":
        from envs.aloha_expert import EXPERTS as ALOHA_EXPERTS, render_only

        render_only(env, ("top",) if render else ())
        return env, ALOHA_EXPERTS[expert]()
    from envs.xarm_expert import XarmLiftExpert

    return env, XarmLiftExpert()


def run_expert_episode(env, expert, seed: int, length: int, on_frame=None) -> tuple[bool, int]:
    """One seeded episode; ``on_frame(obs, action, reward, done, success)`` per step. Returns
    (success at the last step, number of steps)."""
    obs, _ = env.reset(seed=seed)
    expert.reset(env)
    success, steps = False, 0
    for steps in range(1, length + 1):
        action = expert.act(env)
        next_obs, reward, terminated, truncated, info = env.step(action)
        success = bool(info.get("is_success", terminated))
        if on_frame is not None:
            on_frame(obs, action, reward, bool(terminated or truncated), success)
        obs = next_obs
        if terminated or truncated:
            break
    return success, steps


def record_mujoco(root: Path, expert: str, n_episodes: int, seed: int = 0, keep_failed: bool = False,
                  use_videos: bool = True, max_attempts_factor: int = 3, progress: bool = True,
                  stats: dict | None = None, codebase_version: str = CODEBASE_VERSION) -> Path:
    """Like `record_pusht` for the aloha/xarm experts: seeds `seed, seed+1, ...` until `n_episodes`
    are kept (successes only unless `keep_failed`), written as one LeRobotDataset at `root`.
    `stats`, if given, receives kept/attempts/successes."""
    if expert not in MUJOCO_EXPERTS:
        raise DatasetError(f"no MuJoCo expert {expert!r}; available: {', '.join(MUJOCO_EXPERTS)}")
    env_type, _, length, fps, robot_type, task_text, image_key, _, _ = MUJOCO_EXPERTS[expert]
    env, policy = make_expert_env(expert)
    writer = LeRobotDatasetWriter(root, fps=fps, features=mujoco_features(expert, use_videos),
                                  robot_type=robot_type, use_videos=use_videos, codebase_version=codebase_version)
    image_of = (lambda obs: obs["pixels"]["top"]) if env_type == "aloha" else (lambda obs: obs["pixels"])

    def on_frame(obs, action, reward, done, success):
        writer.add_frame({
            image_key: image_of(obs),
            "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
            "action": np.asarray(action, dtype=np.float32),
            "next.reward": np.float32(reward),
            "next.done": done,
            "next.success": success,
        })

    kept, attempts, successes = 0, 0, 0
    bar = tqdm(total=n_episodes, desc=f"recording {expert} demos into {root}", unit="episode", disable=not progress)
    try:
        while kept < n_episodes:
            if attempts >= max_attempts_factor * n_episodes:
                raise DatasetError(f"the {expert} expert succeeded in only {successes} of {attempts} episodes; "
                                   "set dataset.demos.keep_failed=true or lower dataset.demos.n_episodes")
            success, _ = run_expert_episode(env, policy, seed + attempts, length, on_frame)
            attempts += 1
            successes += success
            bar.set_postfix(success=f"{successes}/{attempts}", refresh=False)
            kept += _keep_or_discard(writer, success or keep_failed, task_text, bar)
        writer.finalize()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        env.close()
    log.info("recorded %d %s episodes (%d attempts, %d successes) into %s", kept, expert, attempts, successes, root)
    if stats is not None:
        stats.update(kept=kept, attempts=attempts, successes=successes)
    return root
