"""Structure control: ControlNets and T2I-Adapters make a frame follow an image's lines.

Loaded once at start, by name (``--controlnet NAME=PATH_OR_ID``,
``--t2i-adapter NAME=PATH_OR_ID``). A session picks one or several with the
``controlnet`` param (ControlNets or T2I-Adapters, not both at once), a
``control_scale`` per control, the fraction of the steps they act in
(``control_start``, ``control_end``) and the control image: the input frame
itself (a sketch, ``invert`` for scribble models that want white lines on black)
or its canny edges. The control image is made from the frame as the
image-to-image input is (scaled to cover the size and centre-cropped), so lines
and picture align.

What does not change between frames is cached per session: the control image,
kept while the input is unchanged (a prompt edit on a still sketch runs no
preprocessing), and a T2I-Adapter's features, which depend on the control image
alone (so an adapter costs one pass per new sketch, not one per step).

Fidelity, as diffusers' pipelines: a ControlNet's residuals are scaled per
sample by ``control_scale`` when the step lies in [start, end] (diffusers'
``controlnet_keep``) and several ControlNets' are summed in order
(``MultiControlNetModel``); a T2I-Adapter's features are scaled and summed
(``MultiAdapter``) and act while ``step < int(steps * control_end)``
(``adapter_conditioning_factor``). A frame at the model's size takes its pixels
as diffusers' control image processors do (``x / 255``; for one-channel
adapters PIL's luma).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from livegen_kernels.model_input import rgb_to_model_input
from pipelines.caches import CacheStats
from pipelines.loading import load_component, resolve_model
from stream.params import Params

log = logging.getLogger(__name__)

CONTROLNET, ADAPTER = "ControlNet", "T2I-Adapter"
# kornia's canny thresholds on the gradient of a [0, 1] picture.
CANNY_THRESHOLDS = (0.1, 0.2)


@dataclass(frozen=True, slots=True)
class Step:
    """Which step of a frame's denoising loop runs: ``index`` of ``count``."""

    index: int
    count: int


@dataclass(slots=True)
class ControlState:
    """One session's control image and what was computed from it."""

    source: torch.Tensor | None = None  # the input (H, W, 3) uint8 the image was made from
    key: tuple[Any, ...] = ()  # (control_source, invert, height, width)
    # (3, height, width) float32 in [0, 255], whole levels: the control picture.
    pixels: torch.Tensor | None = None
    # T2I-Adapter features of ``pixels``, unscaled, per adapter name.
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)


class StructureControls:
    """The loaded ControlNets and T2I-Adapters, and what a batch needs from them."""

    def __init__(self, controlnets: Mapping[str, Any], adapters: Mapping[str, Any]) -> None:
        clash = set(controlnets) & set(adapters)
        if clash:
            raise ValueError(f"a ControlNet and a T2I-Adapter share the name {sorted(clash)[0]!r}")
        self.controlnets = dict(controlnets)
        self.adapters = dict(adapters)
        self.memory_format = torch.contiguous_format
        self.stats = {name: CacheStats() for name in ("control_images", "adapter_features")}

    @classmethod
    def load(
        cls,
        controlnets: Mapping[str, str],
        adapters: Mapping[str, str],
        unet: Any,
        device: torch.device,
        dtype: torch.dtype,
    ) -> StructureControls:
        from diffusers import ControlNetModel, T2IAdapter

        loaded: list[dict[str, Any]] = [{}, {}]
        for models, (kind, model_class, named) in zip(
            loaded,
            ((CONTROLNET, ControlNetModel, controlnets), (ADAPTER, T2IAdapter, adapters)),
            strict=True,
        ):
            for name, where in named.items():
                folder = resolve_model(where, what=f"{kind} {name!r}")
                model = load_component(model_class, folder, None, torch_dtype=dtype)
                _check_fits(kind, name, model, unet)
                models[name] = model.to(device).eval().requires_grad_(False)
        return cls(loaded[0], loaded[1])

    @property
    def models(self) -> list[torch.nn.Module]:
        return [*self.controlnets.values(), *self.adapters.values()]

    def use_memory_format(self, memory_format: torch.memory_format) -> None:
        """Run the controls in the UNet's layout (channels-last, by default)."""
        self.memory_format = memory_format
        for model in self.models:
            model.to(memory_format=memory_format)

    @property
    def names(self) -> dict[str, list[str]]:
        """What sessions may pick, for ``session.started``."""
        return {"controlnet": sorted(self.controlnets), "t2i_adapter": sorted(self.adapters)}

    def check(self, params: Params) -> None:
        """Raise ``ValueError`` saying what works if these controls cannot run."""
        names = params.controlnet
        unknown = [n for n in names if n not in self.controlnets and n not in self.adapters]
        if unknown:
            loaded = ", ".join([*self.controlnets, *self.adapters]) or (
                "none (start with --controlnet NAME=PATH or --t2i-adapter NAME=PATH)"
            )
            raise ValueError(f"unknown ControlNet or T2I-Adapter {unknown[0]!r}; loaded: {loaded}")
        if len({self.kind(n) for n in names}) > 1:
            raise ValueError("pick ControlNets or T2I-Adapters, not both in one session")
        scales = params.control_scale
        if isinstance(scales, tuple) and names and len(scales) != len(names):
            raise ValueError(
                f"control_scale has {len(scales)} scales for {len(names)} controls: give one "
                "number for all or one per control"
            )
        if params.control_start >= params.control_end:
            raise ValueError(
                f"control_start {params.control_start} must be below control_end "
                f"{params.control_end}"
            )

    def kind(self, name: str) -> str:
        return CONTROLNET if name in self.controlnets else ADAPTER

    def prepare(
        self,
        states: Sequence[ControlState],
        params: Sequence[Params],
        pixels: Sequence[torch.Tensor],
        size: tuple[int, int],
    ) -> None:
        """Make (or find) each request's control picture and adapter features."""
        for state, p, image in zip(states, params, pixels, strict=True):
            key = (p.control_source, p.invert, *size)
            same = (
                state.pixels is not None
                and state.key == key
                and state.source is not None
                and torch.equal(state.source, image)
            )
            self._count("control_images", same)
            if not same:
                state.source, state.key, state.features = image, key, {}
                state.pixels = control_pixels(image, size, p.control_source, p.invert)
            assert state.pixels is not None
            for name in p.controlnet:
                if name in self.adapters:
                    cached = name in state.features
                    self._count("adapter_features", cached)
                    if not cached:
                        state.features[name] = self._adapter_features(name, state.pixels)

    def unet_kwargs(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        hidden: torch.Tensor,
        added: dict[str, torch.Tensor] | None,
        states: Sequence[ControlState],
        params: Sequence[Params],
        step: Step,
    ) -> dict[str, Any]:
        """The UNet's extra arguments for this step: residuals of the batch's controls."""
        names = params[0].controlnet
        # (B, controls): each control's scale at this step, 0 outside [start, end].
        scales = torch.tensor(
            [[scale * _acts(p, step, self.kind(n)) for n, scale in _scales(p)] for p in params],
            dtype=torch.float32,
            device=sample.device,
        )
        if not scales.any():
            return {}
        if self.kind(names[0]) == ADAPTER:
            residuals = self._adapter_residuals(states, params, scales)
            return {"down_intrablock_additional_residuals": residuals}
        images = torch.stack([s.pixels for s in states if s.pixels is not None]) / 255.0
        down: list[torch.Tensor] = []
        mid: torch.Tensor | None = None
        for j, name in enumerate(names):
            controlnet = self.controlnets[name]
            cond = images.to(controlnet.dtype, memory_format=self.memory_format)
            samples, middle = controlnet(
                sample,
                timesteps,
                encoder_hidden_states=hidden,
                controlnet_cond=cond,
                added_cond_kwargs=added,
                return_dict=False,
            )
            scale = scales[:, j].view(-1, 1, 1, 1)
            samples = [_scaled(x, scale) for x in samples]
            middle = _scaled(middle, scale)
            # Summed in order, as diffusers' MultiControlNetModel does.
            down = samples if not down else [a + b for a, b in zip(down, samples, strict=True)]
            mid = middle if mid is None else mid + middle
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    def _adapter_features(self, name: str, pixels: torch.Tensor) -> list[torch.Tensor]:
        adapter = self.adapters[name]
        picture = pixels
        if adapter.config.in_channels == 1:
            picture = luma(pixels)
        x = (picture / 255.0)[None].to(adapter.dtype, memory_format=self.memory_format)
        return [feature[0] for feature in adapter(x)]

    def _adapter_residuals(
        self, states: Sequence[ControlState], params: Sequence[Params], scales: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per down block, (B, C, h, w): each sample's adapter features, scaled and summed."""
        residuals = []
        for state, p, row in zip(states, params, scales, strict=True):
            # w * f summed in order, as MultiAdapter (and one adapter's pipeline) scale.
            summed: list[torch.Tensor] = []
            for j, name in enumerate(p.controlnet):
                scaled = [_scaled(feature, row[j]) for feature in state.features[name]]
                if summed:
                    scaled = [a + b for a, b in zip(summed, scaled, strict=True)]
                summed = scaled
            residuals.append(summed)
        return [torch.stack(block) for block in zip(*residuals, strict=True)]

    def _count(self, cache: str, hit: bool) -> None:
        stats = self.stats[cache]
        if hit:
            stats.hits += 1
        else:
            stats.misses += 1


def control_pixels(
    image: torch.Tensor, size: tuple[int, int], source: str, invert: bool
) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) float32 whole levels in [0, 255]."""
    if tuple(image.shape[:2]) == size:
        pixels = image.permute(2, 0, 1).float()
    else:
        # The image-to-image input's geometry, back to levels.
        model_input = rgb_to_model_input(image[None], size)[0]
        pixels = ((model_input.float() + 1.0) * 127.5).round().clamp(0, 255)
    if source == "canny":
        import kornia

        _, edges = kornia.filters.canny(pixels[None] / 255.0, *CANNY_THRESHOLDS)
        pixels = (edges[0] * 255.0).expand(3, -1, -1).contiguous()
    if invert:
        pixels = 255.0 - pixels
    return pixels


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) whole levels -> (1, H, W): PIL's ``convert("L")`` (ITU-R 601, rounded)."""
    r, g, b = pixels.round().to(torch.int64)
    weighted: torch.Tensor = r * 19595 + g * 38470 + b * 7471 + 0x8000
    return torch.bitwise_right_shift(weighted, 16).float()[None]


def _scales(p: Params) -> list[tuple[str, float]]:
    scales = p.control_scale
    each = scales if isinstance(scales, tuple) else (scales,) * len(p.controlnet)
    return list(zip(p.controlnet, each, strict=True))


def _acts(p: Params, step: Step, kind: str) -> float:
    """1 when the controls act at this step, else 0, as diffusers decides it."""
    if kind == ADAPTER:
        # adapter_conditioning_factor, with control_start as ControlNets have it.
        return float(step.index < int(step.count * p.control_end)) * float(
            step.index / step.count >= p.control_start
        )
    outside = (
        step.index / step.count < p.control_start or (step.index + 1) / step.count > p.control_end
    )
    return 1.0 - float(outside)


def _scaled(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * scale`` in ``x``'s dtype, rounded once, as a Python float scale is applied."""
    scaled: torch.Tensor = (x.float() * scale).to(x.dtype)
    return scaled


def _check_fits(kind: str, name: str, model: Any, unet: Any) -> None:
    """Refuse at start a control made for another UNet (SD 1.5 against SDXL, say)."""
    if kind == CONTROLNET:
        mine, theirs = model.config.cross_attention_dim, unet.config.cross_attention_dim
        if mine != theirs:
            raise ValueError(
                f"{kind} {name!r} was made for a UNet with cross-attention size {mine}; this "
                f"model's is {theirs}: use one made for this model family"
            )
    log.info("%s %s ready", kind, name)
