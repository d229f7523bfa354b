"""Prompt embeddings: CLIP text encoders behind an LRU shared by all sessions.

Stable Diffusion conditions on one encoder's last hidden states; SDXL on the
penultimate hidden states of two encoders side by side, plus the second one's
pooled projection. SDXL models (``force_zeros_for_empty_prompt``) take an empty
negative prompt as zeros, not as the encoding of "". Typing in a prompt box sends
the same few prompts again and again, so every embedding is cached by prompt; a
batch's missing prompts are encoded together in one call per encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.caches import LruCache


@dataclass(frozen=True, slots=True)
class PromptEmbedding:
    hidden: torch.Tensor  # (tokens, dim): what the UNet cross-attends to
    pooled: torch.Tensor | None  # (projection_dim,): SDXL's extra conditioning


class PromptEncoder:
    def __init__(
        self,
        tokenizers: Sequence[Any],
        text_encoders: Sequence[torch.nn.Module],
        *,
        max_entries: int,
        zeros_for_empty_negative: bool = False,
    ) -> None:
        if len(tokenizers) != len(text_encoders) or len(text_encoders) not in (1, 2):
            raise ValueError("a prompt encoder takes one or two (tokenizer, text encoder) pairs")
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.cache: LruCache[str, PromptEmbedding] = LruCache(max_entries)
        self.zeros_for_empty_negative = zeros_for_empty_negative
        self._zeros: PromptEmbedding | None = None

    @property
    def dual(self) -> bool:
        """Two encoders: SDXL's conditioning (penultimate layers and a pooled vector)."""
        return len(self.text_encoders) == 2

    def __call__(self, prompts: Sequence[str]) -> list[PromptEmbedding]:
        return self.cache.get_many(prompts, self._encode)

    def negatives(self, prompts: Sequence[str]) -> list[PromptEmbedding]:
        """Embeddings of negative prompts for classifier-free guidance."""
        if not self.zeros_for_empty_negative or all(prompts):
            return self(prompts)
        if self._zeros is None:
            shape = self([""])[0]
            pooled = None if shape.pooled is None else torch.zeros_like(shape.pooled)
            self._zeros = PromptEmbedding(torch.zeros_like(shape.hidden), pooled)
        named = iter(self([prompt for prompt in prompts if prompt]))
        return [next(named) if prompt else self._zeros for prompt in prompts]

    def _encode(self, prompts: list[str]) -> list[PromptEmbedding]:
        hidden_states = []
        pooled: torch.Tensor | None = None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                prompts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(encoder.device)
            if self.dual:
                output = encoder(ids, output_hidden_states=True)
                hidden_states.append(output.hidden_states[-2])
                pooled = output[0]  # the last encoder's projection wins, as in SDXL
            else:
                hidden_states.append(encoder(ids)[0])
        hidden = torch.cat(hidden_states, dim=-1)
        return [
            PromptEmbedding(hidden[i], None if pooled is None else pooled[i])
            for i in range(len(prompts))
        ]
