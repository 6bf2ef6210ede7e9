"""A checkpoint or run folder is untrusted input: nothing read from it may choose code to run.

Each test plants a payload in a copy of a real run folder (its manifest re-sealed, as an attacker
would, so the checksums do not catch it), points one entry point at it (resume, eval.py, render.py,
warm start, --load-config) and asserts a clean refusal: exit 2, one `error:` line naming the file and
the key, and the payload's marker file never created.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import one_error_line, run_train, tiny_overrides
from training import checkpoint as ckpt_lib

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, pusht_root) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    r = run_train(tiny_overrides(pusht_root, run_dir, "steps=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def _open_marker(marker: Path) -> dict:
    """A node that, if instantiated, creates `marker` (builtins.open in write mode)."""
    return {"_target_": "builtins.open", "_args_": [str(marker), "w"]}


class _Gadget:
    """A pickle that creates `marker` when unpickled with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_config(ckpt: Path, edit) -> None:
    path = ckpt / ckpt_lib.CONFIG_FILE
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg))
    ckpt_lib.write_manifest(ckpt)  # an attacker re-seals the checksums


def _payloads(marker: Path, folder: Path) -> dict:
    """name -> (how to plant it in a checkpoint folder, text the error must name: for a node, the first
    instantiation key found in it)."""
    gadget = folder / "payload.pkl"

    def nested_in_free_form_dict(cfg):
        cfg["policy"]["input_features"]["observation.state"]["extra"] = _open_marker(marker)

    def logger_node(cfg):
        cfg["logger"].update(_open_marker(marker))

    def viewer_node(cfg):
        cfg["viewer"].update(_open_marker(marker))

    def optimizer_node(cfg):
        cfg["optimizer"].update({"_target_": "builtins.open", "_partial_": True})

    def scheduler_node(cfg):
        cfg["scheduler"] = {**cfg["scheduler"], **_open_marker(marker), "_recursive_": False}

    def torch_load_of_a_pickle(cfg):
        gadget.write_bytes(pickle.dumps(_Gadget(marker)))
        cfg["logger"] = {"_target_": "torch.load", "f": str(gadget), "weights_only": False}

    def interpolation(cfg):
        cfg["job_name"] = "${oc.env:HOME}"

    def choices_pick_a_file_outside_conf(ckpt):
        (ckpt / ckpt_lib.CHOICES_FILE).write_text("policy: ../../tmp/evil\nenv: pusht\n")
        ckpt_lib.write_manifest(ckpt)

    def choices_add_a_target(ckpt):
        text = (ckpt / ckpt_lib.CHOICES_FILE).read_text()
        (ckpt / ckpt_lib.CHOICES_FILE).write_text(text + "+logger._target_: builtins.open\n")
        ckpt_lib.write_manifest(ckpt)

    def pickle_gadget_as_training_state(ckpt):
        (ckpt / ckpt_lib.STATE_FILE).write_bytes(pickle.dumps(_Gadget(marker)))
        ckpt_lib.write_manifest(ckpt)

    def config(edit):
        return lambda ckpt: _plant_config(ckpt, edit)

    return {
        "nested_in_free_form_dict": (config(nested_in_free_form_dict), "key policy.input_features.observation.state.extra._"),
        "logger_node": (config(logger_node), "key logger._"),
        "viewer_node": (config(viewer_node), "key viewer._"),
        "optimizer_node": (config(optimizer_node), "key optimizer._"),
        "scheduler_node": (config(scheduler_node), "key scheduler._"),
        "torch_load_of_a_pickle": (config(torch_load_of_a_pickle), "key logger._"),
        "interpolation": (config(interpolation), "job_name="),
        "choices_outside_conf": (choices_pick_a_file_outside_conf, "policy='../../tmp/evil'"),
        "choices_add_a_target": (choices_add_a_target, "'+logger._target_' is not a config group"),
        "pickle_gadget_state": (pickle_gadget_as_training_state, "training_state.pt is unreadable"),
    }


def _entry(entry: str, run_dir: Path, pusht_root: Path, tmp_path: Path) -> list[str]:
    ckpt = run_dir / "checkpoints" / "last"
    if entry == "resume":
        return tiny_overrides(pusht_root, run_dir, "steps=4", "resume=true")
    if entry == "warm_start":
        return tiny_overrides(pusht_root, tmp_path / "new_run", f"load_checkpoint={ckpt}")
    if entry == "load_config":
        return ["--load-config", str(ckpt / ckpt_lib.CONFIG_FILE), *tiny_overrides(pusht_root, tmp_path / "new_run")]
    if entry == "view":
        return [f"checkpoint={ckpt}", "machine.device_type=cpu"]
    return [f"checkpoint={ckpt}", f"output_dir={tmp_path / 'out'}", "machine.device_type=cpu"]


SCRIPT = {"resume": "train.py", "warm_start": "train.py", "load_config": "train.py", "eval": "eval.py",
          "render": "render.py", "view": "view.py"}
CASES = [(entry, payload) for payload in ("nested_in_free_form_dict", "logger_node", "optimizer_node",
                                          "scheduler_node", "torch_load_of_a_pickle", "interpolation",
                                          "choices_outside_conf", "pickle_gadget_state")
         for entry in ("resume", "eval")]
CASES += [(entry, payload) for entry in ("render", "warm_start", "load_config")
          for payload in ("nested_in_free_form_dict", "logger_node", "choices_add_a_target")]
CASES += [("warm_start", "pickle_gadget_state"), ("render", "torch_load_of_a_pickle")]
CASES += [(entry, "viewer_node") for entry in ("resume", "view")]
CASES += [("view", payload) for payload in ("nested_in_free_form_dict", "interpolation", "choices_add_a_target",
                                            "pickle_gadget_state")]


@pytest.mark.parametrize("entry, payload", CASES)
def test_a_planted_payload_is_refused_and_never_runs(tmp_path, trained_run, pusht_root, entry, payload):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, symlinks=True)
    marker = tmp_path / "PWNED"
    plant, named = _payloads(marker, tmp_path)[payload]
    ckpt = (run_dir / "checkpoints" / "last").resolve()
    plant(ckpt)
    r = run_train(_entry(entry, run_dir, pusht_root, tmp_path), script=SCRIPT[entry])
    assert not marker.exists(), f"the payload ran: {r.stderr[-2000:]}"
    line = one_error_line(r)
    assert named in line, line
    assert str(ckpt) in line or str(run_dir / "checkpoints" / "last") in line, line  # names the file (as given)
    assert not (tmp_path / "new_run").exists() and not (tmp_path / "out").exists()
    assert not (run_dir / "checkpoints" / "000004").exists()


def test_a_checkpoint_is_saved_as_data_and_an_older_one_with_conf_targets_still_loads(tmp_path, trained_run,
                                                                                       pusht_root):
    """New config.yaml files name no code; one written before (its `_target_`s the same as conf/'s) still
    evaluates: a repeat of conf/'s own target chooses nothing."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, symlinks=True)
    ckpt = (run_dir / "checkpoints" / "last").resolve()
    assert "_target_" not in (ckpt / ckpt_lib.CONFIG_FILE).read_text()
    assert "_target_" not in (run_dir / ckpt_lib.CONFIG_FILE).read_text()

    def as_written_before(cfg):
        cfg["policy"]["_target_"] = "models.diffusion.modeling.DiffusionPolicy"
        cfg["logger"]["_target_"] = "tracking.base.NullTracker"

    _plant_config(ckpt, as_written_before)
    r = run_train([f"checkpoint={ckpt}", f"output_dir={tmp_path / 'out'}", "machine.device_type=cpu",
                   "eval.n_episodes=1", "eval.batch_size=1", "eval.max_videos=0"], script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "eval.json").is_file()
