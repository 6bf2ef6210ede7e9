"""The building blocks of VQ-BeT: a residual vector quantiser with EMA codebooks, the VQ-VAE around
it, a causal GPT (nanoGPT's), small MLPs and the focal loss. The math and initialisations are
LeRobot's (which adapted lucidrains' vector-quantize-pytorch and Karpathy's nanoGPT), reduced to the
settings VQ-BeT uses: Euclidean codebooks updated by an exponential moving average (decay 0.8), no
k-means initialisation, no dead-code expiry, commitment weight 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Sequential):
    """Linear layers of the given widths with ReLU between them (none after the last)."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        layers: list[nn.Module] = []
        for width in widths[:-1]:
            layers += [nn.Linear(in_channels, width), nn.ReLU()]
            in_channels = width
        layers.append(nn.Linear(in_channels, widths[-1]))
        super().__init__(*layers)


# ----------------------------------------------------------------------------- GPT
class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_dim: int, n_head: int, dropout: float, block_size: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.c_proj = nn.Linear(hidden_dim, hidden_dim)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head = n_head
        mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, block_size, block_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, hidden_dim: int, n_head: int, dropout: float, block_size: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.attn = CausalSelfAttention(hidden_dim, n_head, dropout, block_size)
        self.ln_2 = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, 4 * hidden_dim), nn.GELU(), nn.Linear(4 * hidden_dim, hidden_dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT over continuous tokens: a linear token embedding, learnt positions, causal blocks."""

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int, n_layer: int, n_head: int,
                 dropout: float, block_size: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict({
            "wte": nn.Linear(input_dim, hidden_dim),
            "wpe": nn.Embedding(block_size, hidden_dim),
            "drop": nn.Dropout(dropout),
            "h": nn.ModuleList([Block(hidden_dim, n_head, dropout, block_size) for _ in range(n_layer)]),
            "ln_f": nn.LayerNorm(hidden_dim),
        })
        self.lm_head = nn.Linear(hidden_dim, output_dim, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of the residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.weight)

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.block_size:
            raise ValueError(f"{t} tokens exceed policy.gpt_block_size={self.block_size}; raise it")
        pos = torch.arange(t, device=tokens.device)
        x = self.transformer.drop(self.transformer.wte(tokens) + self.transformer.wpe(pos).unsqueeze(0))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def decay_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(weights of linear layers, everything else): nanoGPT decays only the former."""
        decay, no_decay = {}, {}
        for module_name, module in self.named_modules():
            for name, p in module.named_parameters(recurse=False):
                full = f"{module_name}.{name}" if module_name else name
                (decay if name == "weight" and isinstance(module, nn.Linear) else no_decay)[full] = p
        return [decay[k] for k in sorted(decay)], [no_decay[k] for k in sorted(no_decay)]


# ----------------------------------------------------------------------------- residual VQ
class EMACodebook(nn.Module):
    """A Euclidean codebook whose vectors follow an exponential moving average of the inputs
    assigned to them (no gradients): `embed_avg / smoothed cluster size`."""

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.8, eps: float = 1e-5) -> None:
        super().__init__()
        self.decay, self.eps, self.codebook_size = decay, eps, codebook_size
        embed = torch.empty(1, codebook_size, dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("embed", embed.squeeze(0))
        self.register_buffer("embed_avg", embed.squeeze(0).clone())
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def forward(self, x: Tensor, update: bool) -> tuple[Tensor, Tensor]:
        """x (N, D) -> (nearest codes (N, D), their indices (N,)); `update`: move the EMA."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            dist = (x.pow(2).sum(-1, keepdim=True) + self.embed.pow(2).sum(-1) - 2 * x @ self.embed.t())
            index = dist.clamp_min(0).sqrt().argmin(dim=-1)
            onehot = F.one_hot(index, self.codebook_size).to(x.dtype)
            quantized = onehot @ self.embed
            if update:
                counts, sums = onehot.sum(0), onehot.t() @ x
                if torch.distributed.is_available() and torch.distributed.is_initialized() \
                        and torch.distributed.get_world_size() > 1:  # codebook statistics of the global batch
                    torch.distributed.all_reduce(counts)
                    torch.distributed.all_reduce(sums)
                self.cluster_size.lerp_(counts, 1 - self.decay)
                self.embed_avg.lerp_(sums, 1 - self.decay)
                total = self.cluster_size.sum()
                smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
                self.embed.copy_(self.embed_avg / smoothed.unsqueeze(-1))
        return quantized, index


class ResidualVQ(nn.Module):
    """Layers of vector quantisation, each quantising what the previous ones left (Zeghidour et al.
    2021, Algorithm 1). Returns the summed codes (straight-through to the input), the codes' indices
    (N, layers) and the commitment loss of each layer."""

    def __init__(self, dim: int, num_layers: int, codebook_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EMACodebook(dim, codebook_size) for _ in range(num_layers)])

    def forward(self, x: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor]:
        residual, out, indices, losses = x, 0.0, [], []
        for layer in self.layers:
            code, index = layer(residual, update)
            losses.append(F.mse_loss(code.detach(), residual))
            out = out + (residual + (code - residual).detach())
            residual = residual - code.detach()
            indices.append(index)
        return out, torch.stack(indices, dim=-1), torch.stack(losses)

    def codes(self, indices: Tensor) -> Tensor:
        """(N, layers) indices -> the sum over layers of their codebook vectors (N, D)."""
        return sum(layer.embed[indices[:, i]] for i, layer in enumerate(self.layers))


class VqVae(nn.Module):
    """Action chunk -> MLP encoder -> residual VQ -> MLP decoder (the paper's section 3.2).

    Owns the training phase as buffers, so a checkpoint resumes inside either phase: `steps` counts
    the optimizer steps taken on it, `discretized` is set once they reach the policy's
    n_vqvae_training_steps, and freezes the codebooks."""

    def __init__(self, action_dim: int, chunk: int, embedding_dim: int, hidden_dim: int, n_embed: int,
                 num_layers: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("discretized", torch.tensor(False))
        self.vq_layer = ResidualVQ(embedding_dim, num_layers, n_embed)
        self.encoder = MLP(action_dim * chunk, [hidden_dim, hidden_dim, embedding_dim])
        self.decoder = MLP(embedding_dim, [hidden_dim, hidden_dim, action_dim * chunk])

    def forward(self, chunks: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Phase 1 loss on (N, chunk, A) action chunks: L1 reconstruction + 5 x commitment."""
        flat = chunks.flatten(1)
        latent = self.encoder(flat)
        quantized, indices, commit = self.vq_layer(latent, update=self.training and not bool(self.discretized))
        recon = (flat - self.decoder(quantized)).abs().mean()
        loss = recon + commit.sum() * 5
        return loss, {
            "recon_l1_error": recon.item(),
            # codes in use per layer, summed (at most layers x n_embed), and distinct code pairs
            "n_different_codes": float(sum(len(torch.unique(indices[:, i])) for i in range(indices.shape[1]))),
            "n_different_combinations": float(len(torch.unique(indices, dim=0))),
        }

    @torch.no_grad()
    def get_code(self, chunks: Tensor) -> Tensor:
        """The codes of (N, chunk, A) action chunks (the phase 2 targets), (N, layers)."""
        _, indices, _ = self.vq_layer(self.encoder(chunks.flatten(1)), update=False)
        return indices

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """(N, layers) codes -> (N, chunk, A) action chunks."""
        return self.decoder(self.vq_layer.codes(indices)).view(indices.shape[0], -1, self.action_dim)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017), mean over rows: cross entropy down-weighted on easy examples."""
    logpt = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (-((1 - logpt.exp()) ** gamma) * logpt).mean()
