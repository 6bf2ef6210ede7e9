"""The prompt: each frame's task string, tokenised as pi0 reads it.

openpi's format: <bos>, the task with underscores and newlines turned into spaces, then a newline;
right-padded (or cut) to `tokenizer_max_length`, with a mask of the real tokens. The tokenizer is the
model's own (`tokenizer.json` of a local Hugging Face folder, read by `transformers`' fast tokenizer,
whose class is fixed here rather than named by the folder). A model with random weights has no
tokenizer to match, so without one it reads UTF-8 bytes (Gemma's special ids first: pad 0, eos 1,
bos 2, then the 256 bytes), built on the spot with `tokenizers`.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import torch
from torch import Tensor

log = logging.getLogger("train")

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>")


def byte_tokenizer():
    """A byte-level tokenizer with no merges: every UTF-8 byte is one token (ids 3..258)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + i for i, char in enumerate(alphabet)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>")


def load_tokenizer(tokenizer_path: Optional[str], pretrained_path: Optional[str]):
    """The tokenizer of `tokenizer_path`, else of `pretrained_path`, else (random weights) bytes."""
    from transformers import PreTrainedTokenizerFast

    folder = tokenizer_path or pretrained_path
    if folder is None:
        log.info("pi0: no policy.tokenizer_path or pretrained_path, so prompts are tokenised as UTF-8 bytes")
        return byte_tokenizer()
    folder = os.path.expanduser(folder)
    if not os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        key = "tokenizer_path" if tokenizer_path else "pretrained_path"
        raise ValueError(
            f"policy.{key}={folder} has no {TOKENIZER_FILE} (LeRobot's pi0 checkpoints ship none); set"
            " policy.tokenizer_path to a local folder with PaliGemma's tokenizer (e.g. a copy of"
            " paligemma-3b-pt-224)"
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 0
    return tokenizer


class PromptTokenizer:
    """Task strings -> (tokens (B, L) long, mask (B, L) bool); each distinct string is encoded once."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._ids: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def ids(self, task: str) -> list[int]:
        if task not in self._ids:
            text = task.strip().replace("_", " ").replace("\n", " ") + "\n"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            bos = self.tokenizer.bos_token_id
            self._ids[task] = ([bos] if bos is not None else []) + list(ids)
        return self._ids[task]

    def __call__(self, tasks: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        tokens = torch.full((len(tasks), self.max_length), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros(len(tasks), self.max_length, dtype=torch.bool)
        for i, task in enumerate(tasks):
            ids = self.ids(str(task))[: self.max_length]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = True
        return tokens.to(device), mask.to(device)
