"""Prompt embeddings: CLIP text encoders behind an LRU shared by all sessions.

Stable Diffusion conditions on one encoder's last hidden states; SDXL on the
penultimate hidden states of two encoders side by side, plus the second one's
pooled projection. SDXL models (``force_zeros_for_empty_prompt``) take an empty
negative prompt as zeros, not as the encoding of "". Typing in a prompt box sends
the same few prompts again and again, so every embedding is cached by prompt; a
batch's missing prompts are encoded together in one call per encoder.

A prompt may also be a blend of weighted texts (:mod:`pipelines.blending`): each
text is encoded and cached on its own, so moving a blend slider costs no text
encoder pass. :class:`PromptTransition` eases a session from the embedding its
last frame used to a new prompt's over ``prompt_transition`` generated frames, so
a webcam restyle glides instead of jumping when the prompt changes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.blending import blend
from pipelines.caches import LruCache
from stream.params import PromptBlend


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

    def blended(
        self, prompts: Sequence[str | PromptBlend], modes: Sequence[str]
    ) -> list[PromptEmbedding]:
        """Embeddings of prompts and blends (each mixed by its mode); texts encoded at once."""
        blends = [((p, 1.0),) if isinstance(p, str) else p for p in prompts]
        texts = list(dict.fromkeys(text for b in blends for text, _ in b))
        found = dict(zip(texts, self(texts), strict=True))
        return [
            mix_embeddings([found[text] for text, _ in b], [w for _, w in b], mode)
            for b, mode in zip(blends, modes, strict=True)
        ]

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


def mix_embeddings(
    embeddings: Sequence[PromptEmbedding], weights: Sequence[float], mode: str
) -> PromptEmbedding:
    """Weighted mix of embeddings, the hidden states and pooled vectors each on their own."""
    if len(embeddings) == 1:
        return embeddings[0]
    hidden = blend([e.hidden for e in embeddings], weights, mode)
    pooled = [e.pooled for e in embeddings]
    if any(p is None for p in pooled):
        return PromptEmbedding(hidden, None)
    return PromptEmbedding(hidden, blend([p for p in pooled if p is not None], weights, mode))


@dataclass(slots=True)
class PromptTransition:
    """One session's ease from its last prompt embedding to a new prompt's, frame by frame."""

    shown: PromptEmbedding | None = None  # what the last generated frame used
    start: PromptEmbedding | None = None  # where the running transition began
    target: Hashable = None  # the prompt (and blend mode) being eased to
    frame: int = 0

    @property
    def running(self) -> bool:
        return self.start is not None

    def step(
        self, key: Hashable, embedding: PromptEmbedding, frames: int, mode: str
    ) -> PromptEmbedding:
        """The embedding the next generated frame uses, ``frames`` frames from the old one."""
        if key != self.target:
            self.start = self.shown
            self.target, self.frame = key, 0
        if frames <= 0:
            self.start = None
        shown = embedding
        if self.start is not None:
            self.frame += 1
            t = self.frame / frames
            if t < 1.0:
                shown = mix_embeddings([self.start, embedding], [1.0 - t, t], mode)
            else:
                self.start = None
        self.shown = shown
        return shown
