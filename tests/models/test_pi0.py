"""pi0 at the tiny size on the CPU: its attention mask, the joint layers against `transformers`' own
Gemma, flow matching (loss, time sampling, Euler integration with and without the key/value cache),
padding, the ALOHA conversions, what trains, and loading local Hugging Face folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.pi0 import aloha  # noqa: E402
from models.pi0.attention import ATTENTION, make_att_2d_masks  # noqa: E402
from models.pi0.flow import sample_time  # noqa: E402
from models.pi0.modeling import PI0Policy, pad_vector, resize_with_pad  # noqa: E402
from models.pi0.variants import VARIANTS, VLM_VARIANTS, paligemma_config  # noqa: E402

STATE, IMAGE, ACTION = "observation.state", "observation.images.top", "action"
TINY = dict(paligemma_variant="tiny", action_expert_variant="tiny", proj_width=32, resize_imgs_with_padding=(28, 28),
            chunk_size=4, n_action_steps=4, dtype="float32")


def features(dim: int = 14, image=(3, 24, 32)) -> dict:
    return {STATE: {"type": "STATE", "shape": [dim]}, IMAGE: {"type": "VISUAL", "shape": list(image)},
            ACTION: {"type": "ACTION", "shape": [dim]}}


def stats(dim: int = 14) -> dict:
    g = torch.Generator().manual_seed(1)
    return {STATE: {"mean": torch.randn(dim, generator=g), "std": torch.rand(dim, generator=g) + 0.5},
            ACTION: {"mean": torch.randn(dim, generator=g), "std": torch.rand(dim, generator=g) + 0.5}}


def make_policy(dim: int = 14, seed: int = 0, **kwargs) -> PI0Policy:
    torch.manual_seed(seed)
    return PI0Policy(features(dim), stats(dim), **{**TINY, **kwargs})


def make_batch(dim: int = 14, batch: int = 3, chunk: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {STATE: torch.randn(batch, dim, generator=g), IMAGE: torch.rand(batch, 3, 24, 32, generator=g),
            ACTION: torch.randn(batch, chunk, dim, generator=g), "action_is_pad": torch.zeros(batch, chunk, dtype=torch.bool),
            "task": ["pick up the cube", "insert the peg into the socket", "push"][:batch]}


# ----------------------------------------------------------------------------- attention
def test_mask_is_prefix_bidirectional_and_suffix_causal_over_the_prefix():
    """3 image tokens, 3 prompt tokens (the last padding), the state, 3 actions; built by hand from
    pi0's rule: the prefix sees the valid prefix, the state sees the prefix and itself, actions see all."""
    pad = torch.tensor([[1, 1, 1, 1, 1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    flags = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    prefix, state, actions = range(6), 6, range(7, 10)
    expected = torch.zeros(10, 10, dtype=torch.bool)
    for q in range(10):
        for k in range(10):
            if not (pad[0, q] and pad[0, k]):
                continue
            if q in prefix:
                expected[q, k] = k in prefix
            elif q == state:
                expected[q, k] = k in prefix or k == state
            else:
                expected[q, k] = True
    assert torch.equal(make_att_2d_masks(pad, flags)[0], expected)


def test_joint_layers_match_transformers_gemma_on_one_group():
    """The expert alone under a causal mask is a plain GemmaModel: our layer loop (RoPE, grouped-query
    attention, norms, MLP) must give what `transformers` computes, with every attention kernel."""
    policy = make_policy().eval()
    pwe = policy.model.paligemma_with_expert
    x = torch.randn(2, 5, 32)
    positions = torch.arange(5).expand(2, 5)
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool)).expand(2, 5, 5)
    with torch.no_grad():
        reference = pwe.gemma_expert(inputs_embeds=x, position_ids=positions).last_hidden_state
        # transformers 4.x scales inputs_embeds by sqrt(width) in GemmaModel.forward, 5.x in the embedding
        scaled = x * math.sqrt(32) if int(transformers.__version__.split(".")[0]) < 5 else x
        for name in ("eager", "sdpa", "flex"):
            pwe.attend = ATTENTION[name]
            _, ours = pwe(None, scaled, causal, positions)
            torch.testing.assert_close(ours, reference, atol=2e-5, rtol=2e-5, msg=name)
        tokens = torch.tensor([[2, 7, 0]])
        table = pwe.language_model.embed_tokens.weight
        torch.testing.assert_close(pwe.embed_language(tokens), table[tokens] * math.sqrt(32))


@pytest.mark.parametrize("implementation", ["sdpa", "flex"])
def test_attention_kernels_give_the_eager_actions(implementation):
    eager = make_policy(attention_implementation="eager", empty_cameras=1).eval()
    other = make_policy(attention_implementation=implementation, empty_cameras=1).eval()
    other.load_state_dict(eager.state_dict())
    batch, noise = make_batch(), torch.randn(3, 4, 32)
    torch.testing.assert_close(other.predict_action_chunk(batch, noise=noise),
                               eager.predict_action_chunk(batch, noise=noise), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- flow matching
def test_time_is_beta_1_5_1_shifted_into_0_001_1():
    t = sample_time(40_000, 1.5, 1.0, 0.999, 0.001, "cpu")
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01
    for x in (0.2, 0.5, 0.8):  # Beta(1.5, 1) has CDF x^1.5
        empirical = ((t - 0.001) / 0.999 <= x).float().mean().item()
        assert abs(empirical - x**1.5) < 0.01


def test_loss_regresses_the_velocity_noise_minus_actions_on_valid_steps_and_dims():
    policy = make_policy(dim=6)
    batch = make_batch(dim=6)
    batch["action_is_pad"][:, -1] = True
    noise, time = torch.randn(3, 4, 32), torch.tensor([0.1, 0.5, 0.9])
    loss, info = policy(batch, noise=noise, time=time)

    # by hand: normalised, padded actions; x_t on the straight path; the model's velocity there
    norm = policy.normalizer.normalize(batch)
    actions = pad_vector(norm[ACTION], 32)
    _, images, image_masks, tokens, token_masks, state = policy._inputs(batch)
    t = time[:, None, None]
    prefix = policy.model.embed_prefix(images, image_masks, tokens, token_masks)
    v = policy.model.velocity(*prefix, state, t * noise + (1 - t) * actions, time)
    error = (v - (noise - actions))[:, :3, :6] ** 2  # 3 valid steps, 6 real dims
    torch.testing.assert_close(loss, error.mean(), atol=1e-5, rtol=1e-5)
    assert info["loss"] == pytest.approx(loss.item())

    # without the padding mask the last step's error counts too
    batch["action_is_pad"][:] = False
    everything = ((v - (noise - actions))[:, :, :6] ** 2).mean()
    torch.testing.assert_close(policy(batch, noise=noise, time=time)[0], everything, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(everything, loss)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_euler_with_and_without_kv_cache_give_the_same_actions(implementation):
    policy = make_policy(attention_implementation=implementation, empty_cameras=1, num_steps=5).eval()
    batch, noise = make_batch(), torch.randn(3, 4, 32)
    with_cache = policy.predict_action_chunk(batch, noise=noise, use_cache=True)
    without = policy.predict_action_chunk(batch, noise=noise, use_cache=False)
    torch.testing.assert_close(with_cache, without, atol=1e-5, rtol=1e-5)

    # the sampler is Euler from t = 1 to 0 in num_steps steps of the model's velocity
    _, images, image_masks, tokens, token_masks, state = policy._inputs(batch)
    model = policy.model
    prefix = model.embed_prefix(images, image_masks, tokens, token_masks)
    x = noise
    with torch.no_grad():
        for step in range(5):
            x = x - 0.2 * model.velocity(*prefix, state, x, torch.full((3,), 1.0 - 0.2 * step))
    expected = policy.normalizer.unnormalize({ACTION: x[:, :, :14]})[ACTION]
    torch.testing.assert_close(with_cache, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- padding, images, ALOHA
def test_state_and_actions_are_zero_padded_and_predictions_cut_back():
    policy = make_policy(dim=5).eval()
    seen = {}
    policy.model.state_proj.register_forward_hook(lambda m, args, out: seen.setdefault("state", args[0]))
    chunk = policy.predict_action_chunk(make_batch(dim=5))
    assert seen["state"].shape == (3, 32) and torch.all(seen["state"][:, 5:] == 0)
    assert torch.equal(seen["state"][:, :5], policy.normalizer.normalize(make_batch(dim=5))[STATE])
    assert chunk.shape == (3, 4, 5)
    assert torch.equal(pad_vector(torch.ones(2, 3), 5), torch.tensor([[1.0, 1, 1, 0, 0]] * 2))


def test_images_keep_their_aspect_ratio_on_black():
    image = torch.ones(1, 3, 14, 56)  # 4:1 -> 7 x 28 rows of image, centred: 10 black rows above, 11 below
    out = resize_with_pad(image, 28, 28)
    assert out.shape == (1, 3, 28, 28)
    assert torch.all(out[..., 10:17, :] == 1) and torch.all(out[..., :10, :] == 0) and torch.all(out[..., 17:, :] == 0)


def test_aloha_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(2, 4, 14, generator=g)
    assert torch.allclose(aloha.encode_actions(aloha.encode_actions_inv(actions)), actions, atol=1e-6)
    state = torch.rand(2, 14, generator=g) * 0.03 + 0.02  # grippers inside their linear range
    decoded = aloha.decode_state(state)
    assert torch.equal(decoded[:, [1, 2, 8, 9]], -state[:, [1, 2, 8, 9]])
    assert torch.equal(decoded[:, [0, 3, 4, 5, 7]], state[:, [0, 3, 4, 5, 7]])
    deltas = aloha.to_deltas(actions, state)
    assert torch.equal(deltas[..., 6], actions[..., 6]) and torch.equal(deltas[..., 13], actions[..., 13])
    assert torch.allclose(deltas[..., 0], actions[..., 0] - state[:, None, 0])
    assert torch.allclose(aloha.from_deltas(deltas, state), actions, atol=1e-6)


def test_aloha_policy_trains_in_pi_space_and_answers_in_aloha_space():
    """With both ALOHA options the policy's prediction is the model's output taken back through
    deltas, normalisation and the pi -> Aloha conversion: the inverse of what training does to targets."""
    policy = make_policy(adapt_to_pi_aloha=True, use_delta_joint_actions_aloha=True).eval()
    batch = make_batch()
    batch[STATE] = torch.rand(3, 14) * 0.03 + 0.02
    noise = torch.randn(3, 4, 32)
    chunk = policy.predict_action_chunk(batch, noise=noise)
    # feed the prediction back as a training target: the model-space target must be what it sampled
    with torch.no_grad():
        plain = make_policy(adapt_to_pi_aloha=False, use_delta_joint_actions_aloha=False)
        plain.load_state_dict(policy.state_dict())
        _, images, image_masks, tokens, token_masks, _ = policy._inputs(batch)
        state_n = policy.normalizer.normalize({STATE: aloha.decode_state(batch[STATE])})[STATE]
        sampled = policy.model.sample_actions(images, image_masks, tokens, token_masks, pad_vector(state_n, 32), noise,
                                              10)[:, :, :14]
        target = policy.normalizer.normalize({ACTION: aloha.encode_actions_inv(chunk)})[ACTION]
        torch.testing.assert_close(aloha.to_deltas(target, state_n), sampled, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- what trains
def _trainable(policy) -> set[str]:
    return {n for n, p in policy.named_parameters() if p.requires_grad}


def test_freezing_flags_leave_the_right_parameters_frozen_and_out_of_the_optimizer():
    default = make_policy()  # freeze_vision_encoder=true
    names = _trainable(default)
    assert not any(".vision_tower." in n for n in names)
    assert any(".multi_modal_projector." in n for n in names) and any(".language_model.layers.0." in n for n in names)
    assert any("state_proj" in n for n in names) and any(".gemma_expert." in n for n in names)
    in_optimizer = {id(p) for g in default.get_optim_params() for p in g["params"]}
    assert in_optimizer == {id(p) for p in default.parameters() if p.requires_grad}

    expert_only = _trainable(make_policy(train_expert_only=True))
    assert expert_only and all(".gemma_expert." in n or "_proj" in n.split(".")[1] or "action_time_mlp" in n
                               for n in expert_only)
    assert not any(".language_model." in n or ".multi_modal_projector." in n for n in expert_only)
    assert not any("state_proj" in n for n in _trainable(make_policy(train_state_proj=False)))
    assert any(".vision_tower." in n for n in _trainable(make_policy(freeze_vision_encoder=False)))

    # every parameter left trainable gets a gradient (DDP needs no find_unused_parameters), frozen ones none
    for policy in (default, make_policy(train_expert_only=True), make_policy(freeze_vision_encoder=False)):
        policy(make_batch())[0].backward()
        assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)
        assert all(p.grad is None for p in policy.parameters() if not p.requires_grad)


def test_expert_only_training_through_the_cache_equals_the_joint_pass():
    """train_expert_only runs the frozen prefix once, without autograd, into a key/value cache: the loss
    and the gradients are those of the joint pass."""
    policy = make_policy(train_expert_only=True)
    assert policy.prefix_frozen
    batch = make_batch()
    _, images, image_masks, tokens, token_masks, state = policy._inputs(batch)
    actions = pad_vector(policy.normalizer.normalize(batch)[ACTION], 32)
    noise, time = torch.randn(3, 4, 32), torch.tensor([0.2, 0.5, 0.7])
    results = []
    for frozen in (True, False):
        policy.zero_grad()
        loss = policy.model(images, image_masks, tokens, token_masks, state, actions, noise, time,
                            prefix_frozen=frozen).mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_bfloat16_keeps_trainable_weights_float32_and_stores_frozen_ones_in_bf16():
    policy = make_policy(dtype="bfloat16")
    for p in policy.parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16)
    loss = policy(make_batch())[0]
    assert torch.isfinite(loss)


def test_gradient_checkpointing_gives_the_same_gradients():
    batch, noise, time = make_batch(), torch.randn(3, 4, 32), torch.tensor([0.2, 0.5, 0.7])
    grads = []
    for checkpointing in (False, True):
        policy = make_policy(gradient_checkpointing=checkpointing, freeze_vision_encoder=False)
        policy(batch, noise=noise, time=time)[0].backward()
        grads.append({n: p.grad for n, p in policy.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------- local weights
def _train_tokenizer(folder):
    """A small BPE tokenizer trained on the spot, saved in the Hugging Face layout (tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tokenizer.train_from_iterator(["pick up the cube and lift it", "insert the peg into the socket",
                                   "push the T-shaped block onto the target"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def test_pretrained_paligemma_base_loads_exactly_with_its_tokenizer(tmp_path):
    from transformers import PaliGemmaForConditionalGeneration

    tokenizer = _train_tokenizer(tmp_path)
    torch.manual_seed(3)
    config = paligemma_config(VARIANTS["tiny"], VLM_VARIANTS["tiny"], 28, len(tokenizer), "eager")
    PaliGemmaForConditionalGeneration(config).save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(next(tmp_path.glob("*.safetensors"))))
    policy = make_policy(pretrained_path=str(tmp_path))
    pwe = policy.model.paligemma_with_expert
    assert pwe.language_model.embed_tokens.weight.shape[0] == len(tokenizer)
    ours = {n: t for n, t in pwe.state_dict().items()}
    checked = 0
    for key, value in saved.items():
        if "lm_head" in key:
            continue
        # transformers 5 saves `model.language_model.`, 4.5x the hub layout `language_model.model.`
        name = key.removeprefix("model.").replace("language_model.model.", "language_model.")
        name = name.replace("vision_model.", "")
        match = [t for n, t in ours.items() if n.replace("vision_model.", "") == name]
        assert len(match) == 1, key
        assert torch.equal(match[0], value), key
        checked += 1
    assert checked == sum(1 for n in ours if not n.startswith("gemma_expert."))
    tokens, mask = policy.prompts(["pick up the cube"], torch.device("cpu"))
    expected = [tokenizer.bos_token_id] + tokenizer("pick up the cube\n", add_special_tokens=False)["input_ids"]
    assert tokens[0, : mask[0].sum()].tolist() == expected


def test_pretrained_pi0_checkpoint_in_lerobot_layout_loads_every_tensor(tmp_path):
    """A pi0 checkpoint as LeRobot 0.4.4 publishes it: model.safetensors with its key names (the
    PaliGemma of transformers 4.5x inside `paligemma_with_expert`, the expert's `model.`), config.json."""
    from safetensors.torch import save_file

    _train_tokenizer(tmp_path / "tok")
    source = make_policy(seed=5, tokenizer_path=str(tmp_path / "tok"))
    layout = {}
    for name, tensor in source.model.state_dict().items():
        key = name.replace("paligemma_with_expert.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."
                           "vision_model.")
        key = key.replace("paligemma_with_expert.multi_modal_projector.",
                          "paligemma_with_expert.paligemma.model.multi_modal_projector.")
        key = key.replace("paligemma_with_expert.language_model.", "paligemma_with_expert.paligemma.model.language_"
                          "model.")
        key = key.replace("paligemma_with_expert.gemma_expert.", "paligemma_with_expert.gemma_expert.model.")
        key = key.replace("vision_model.vision_model.", "vision_model.")
        layout[key] = tensor.clone().contiguous()
    layout["paligemma_with_expert.paligemma.lm_head.weight"] = torch.zeros(3, 3)  # present upstream, unused here
    save_file(layout, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"type": "pi0", "paligemma_variant": "tiny"}))

    loaded = make_policy(seed=9, pretrained_path=str(tmp_path), tokenizer_path=str(tmp_path / "tok"))
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name

    with pytest.raises(ValueError, match="has shape .* but the model expects"):
        make_policy(pretrained_path=str(tmp_path), tokenizer_path=str(tmp_path / "tok"), max_state_dim=16)
    with pytest.raises(ValueError, match="no tokenizer.json"):  # LeRobot's checkpoints ship no tokenizer
        make_policy(pretrained_path=str(tmp_path))
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin is a pickle and is not read"):
        make_policy(pretrained_path=str(tmp_path), tokenizer_path=str(tmp_path / "tok"))


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("implementation", ["sdpa", "flex", "fa2"])
def test_cuda_kernels_train_in_bf16_like_eager(implementation):
    import importlib.util

    if implementation == "fa2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    eager = make_policy(attention_implementation="eager", dtype="bfloat16", empty_cameras=1).cuda()
    other = make_policy(attention_implementation=implementation, dtype="bfloat16", empty_cameras=1).cuda()
    other.load_state_dict(eager.state_dict())
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_batch().items()}
    noise, time = torch.randn(3, 4, 32, device="cuda"), torch.tensor([0.2, 0.5, 0.7], device="cuda")
    losses = []
    for policy in (eager, other):
        loss = policy(batch, noise=noise, time=time)[0]
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.requires_grad)
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)
    eager.eval(), other.eval()
    noise = torch.randn(3, 4, 32, device="cuda")
    torch.testing.assert_close(other.predict_action_chunk(batch, noise=noise),
                               eager.predict_action_chunk(batch, noise=noise), atol=5e-2, rtol=5e-2)


def test_select_action_executes_the_queued_chunk_and_declares_it():
    """A chunk of n_action_steps actions is planned, taken in order, and reported by action_plan()."""
    policy = make_policy().eval()
    batch = make_batch()
    first, second = policy.select_action(batch), policy.select_action(batch)
    planned, taken = policy.action_plan()
    assert planned.shape == (3, policy.config.n_action_steps, first.shape[-1]) and taken == 2
    assert torch.equal(planned[:, 0], first) and torch.equal(planned[:, 1], second)
