"""Few-step latent diffusion: what the model families share.

A family (``sd_turbo.py``, ``lcm.py``) names its defaults and limits and how
the UNet is conditioned; this module does the rest: loading the components,
the per-session caches, and one batched ``__call__`` over requests from many
sessions. A batch may mix prompts, seeds, strengths, and text-to-image with
image-to-image requests; each sample gets its own timesteps (see
:mod:`pipelines.samplers`), so a batched frame equals the same request run alone.

Fidelity: a request makes the frame diffusers' own pipeline makes on the same
weights and settings with ``generator=torch.Generator("cpu").manual_seed(seed)``
(a batch of one): noise is drawn from the session's seed on the CPU in the order
diffusers draws it (the VAE posterior sample for image to image, the initial
noise, then the sampler's fresh noise per step), text encoders, guidance, VAE scaling
and upcasting and pre- and post-processing follow the reference pipelines.
``tests/pipelines/test_reference.py`` holds livegen to that, latents and pixels.

The caches, each counted in :meth:`FewStepPipeline.cache_stats`:

- ``prompt_embeddings``: an LRU shared by all sessions, keyed by prompt;
- ``input_latents``: the VAE posterior of a session's last input, so a params
  edit on an unchanged sketch skips the VAE encoder;
- ``noise``: the noise a session's seed draws, so unchanged inputs give stable
  frames;
- ``unchanged_inputs``: an input within ``similarity_threshold`` of the one the
  last frame was made from (and the same params) is answered with that frame,
  without a UNet pass;
- the last output's latent, blended into the next input by ``latent_feedback``
  (temporal coherence for webcam restyling);
- ``control_images`` and ``adapter_features``: a session's structure-control
  picture and a T2I-Adapter's features of it (:mod:`pipelines.control`).

Conditioning is made of parts the denoising loop composes: prompt blends and
transitions (:mod:`pipelines.prompts`), seed blends (:meth:`FewStepPipeline._noise`),
ControlNets and T2I-Adapters (:mod:`pipelines.control`), each caching what does
not change between frames.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from livegen_kernels.frame_difference import frame_difference
from livegen_kernels.model_input import rgb_to_model_input
from livegen_kernels.model_output import model_output_to_rgb
from pipelines.base import FrameRequest, Pipeline, PipelineOptions, resolve_device
from pipelines.blending import blend
from pipelines.caches import CacheStats
from pipelines.control import ControlState, Step, StructureControls
from pipelines.lanes import Lanes
from pipelines.loading import (
    ModelNotFound,
    load_component,
    read_config,
    read_model_index,
    resolve_dtype,
    resolve_model,
)
from pipelines.prepack import prepack_weights
from pipelines.prompts import PromptEmbedding, PromptEncoder, PromptTransition
from pipelines.samplers import SAMPLERS, BatchSchedule, FewStepSampler, make_sampler
from stream.params import Params, SeedBlend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeedNoise:
    """The noise one request draws from its seed, in the order diffusers draws it."""

    posterior: torch.Tensor | None  # (C, h, w): the VAE posterior sample's (image to image)
    initial: torch.Tensor  # (C, h, w)
    steps: torch.Tensor  # (n, C, h, w): fresh noise for the sampler's steps (lcm, euler_a)


@dataclass(frozen=True, slots=True)
class Posterior:
    """What the VAE encoder made of an input: (C, h, w) each, unscaled."""

    mean: torch.Tensor
    std: torch.Tensor | None  # None for TAESD, whose encoder gives the latent itself


@dataclass(eq=False, slots=True)
class DiffusionState:
    """One session's tensors between frames, on the pipeline's device."""

    # The input the last frame was generated from, as received: uint8 (H, W, 3);
    # None when that frame was text-to-image.
    input_pixels: torch.Tensor | None = None
    input_posterior: Posterior | None = None
    noise_key: tuple[Any, ...] | None = None
    noise: SeedNoise | None = None
    # The params the last frame was generated with (output encoding left out).
    output_params: Params | None = None
    output: np.ndarray | None = None  # (H, W, 3) uint8
    # The final latent of the last frame, as diffusers' output_type="latent" gives it.
    output_latent: torch.Tensor | None = None  # (C, h, w), float32
    prompt: PromptTransition = field(default_factory=PromptTransition)
    control: ControlState = field(default_factory=ControlState)


@dataclass(slots=True)
class Components:
    # diffusers models, typed Any: their configs and outputs are untyped.
    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL, or AutoencoderTiny in its place
    prompts: PromptEncoder
    scheduler_config: Mapping[str, Any]
    # Input pixels per latent pixel, from the model's own VAE.
    vae_scale_factor: int
    controls: StructureControls


class FewStepPipeline(Pipeline):
    text_to_image = True
    max_batch_size = 8
    max_steps: int
    default_sampler: str

    def __init__(self, options: PipelineOptions, components: Components) -> None:
        super().__init__(options)
        self.unet: Any = components.unet
        self.vae: Any = components.vae
        self.prompts = components.prompts
        self.structure = components.controls
        self.dtype = next(self.unet.parameters()).dtype
        self.scheduler_class: str = components.scheduler_config.get("_class_name", "")
        self.samplers: dict[str, FewStepSampler] = {
            name: make_sampler(name, components.scheduler_config, self.device) for name in SAMPLERS
        }
        self.vae_scale_factor = components.vae_scale_factor
        from diffusers import AutoencoderTiny

        # The KL VAE's encoder gives a distribution that img2img samples with the seed's
        # noise, as diffusers does; TAESD's gives the latent itself.
        self.vae_samples_posterior = not isinstance(self.vae, AutoencoderTiny)
        # As diffusers: any multiple of the VAE's factor; the UNet's up blocks take the
        # sizes of their skip connections where halving left an odd latent side.
        self.size_multiple = self.vae_scale_factor
        self.latent_channels: int = self.unet.config.in_channels
        self.loras: dict[str, str] = {}
        self._active_lora: str | None = None
        self._stats = {
            name: CacheStats() for name in ("input_latents", "noise", "unchanged_inputs")
        }
        self._unet_forward: Any = self.unet
        self.memory_format = (
            torch.channels_last if options.channels_last else torch.contiguous_format
        )
        self.unet.to(memory_format=self.memory_format)
        self.vae.to(memory_format=self.memory_format)
        self.structure.use_memory_format(self.memory_format)
        if self.device.type == "cpu":
            # A batch's full-resolution activations overflow a CPU's caches: the
            # autoencoder is faster one image at a time there (bench/README.md).
            self.vae.enable_slicing()
        # A compiled UNet is warmed up for whole batches, on one thread.
        cpu_eager = self.device.type == "cpu" and not options.compile
        self.lanes = Lanes(options.cpu_lanes if cpu_eager else 1)
        for name, path in options.loras.items():
            self.add_lora(name, path)
        # A LoRA every session runs with (an LCM-LoRA on a base model): fused into the
        # weights when it is the only one, so a frame costs what the base model costs.
        self.standing_lora = self.find_standing_lora()
        if self.standing_lora and list(self.loras) == [self.standing_lora]:
            self.unet.fuse_lora(adapter_names=[self.standing_lora])
            self.unet.unload_lora()
            self.loras = {}
            log.info("fused LoRA %s into the UNet", self.standing_lora)
        # Compiling on the CPU packs the UNet's weights itself (at warm-up).
        unet = [] if options.compile else [self.unet]
        self._prepack_weights(*unet, self.vae, *self.prompts.text_encoders, *self.structure.models)

    # Loading.

    @classmethod
    def load(cls, options: PipelineOptions) -> Self:
        return cls(options, load_components(options))

    def add_lora(self, name: str, path: str) -> None:
        """Load a LoRA file onto the UNet as adapter ``name``; sessions pick it by name."""
        from diffusers.loaders.lora_pipeline import (
            StableDiffusionLoraLoaderMixin,
            StableDiffusionXLLoraLoaderMixin,
        )

        file = Path(path).expanduser()
        if not file.is_file():
            raise ModelNotFound(f"LoRA {name!r}: no file at {file.resolve()}")
        loader = (
            StableDiffusionXLLoraLoaderMixin
            if self.prompts.dual
            else StableDiffusionLoraLoaderMixin
        )
        try:
            state_dict, alphas = loader.lora_state_dict(str(file))
            if any(key.startswith("text_encoder") for key in state_dict):
                log.warning("LoRA %s also has text-encoder layers; only the UNet's are used", name)
            with warnings.catch_warnings():
                # peft's caution on a second adapter: several is what sessions switch between.
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                self.unet.load_lora_adapter(
                    state_dict, network_alphas=alphas, prefix="unet", adapter_name=name
                )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"LoRA {name!r} from {file} does not fit this UNet: {exc}") from None
        self.loras[name] = str(file)
        self._active_lora = None  # loading activates the new adapter; choose again per batch
        log.info("loaded LoRA %s from %s", name, file)

    # The Pipeline interface.

    @property
    def default_params(self) -> Params:
        # The size the UNet was trained at, as diffusers defaults it.
        sample_size = self.unet.config.sample_size
        side = (
            sample_size if isinstance(sample_size, int) else sample_size[0]
        ) * self.vae_scale_factor
        return Params(
            width=side, height=side, scheduler=self.default_sampler, **self.family_defaults()
        )

    def family_defaults(self) -> dict[str, Any]:
        """Params a family starts sessions with, besides the size and sampler."""
        return {}

    def find_standing_lora(self) -> str | None:
        """The loaded LoRA that every session runs with, if the family has one."""
        return None

    def unused_params(self, params: Params) -> dict[str, Any]:
        """Params that cannot change this family's frame, with the values they count as."""
        return {}

    def controls(self) -> dict[str, list[str]]:
        return self.structure.names

    def cache_stats(self) -> Mapping[str, CacheStats]:
        return {
            "prompt_embeddings": self.prompts.cache.stats,
            **self._stats,
            **self.structure.stats,
        }

    def new_state(self) -> DiffusionState:
        return DiffusionState()

    def check_params(self, params: Params) -> None:
        if params.steps > self.max_steps:
            raise ValueError(f"{self.name} runs 1 to {self.max_steps} steps, got {params.steps}")
        if params.scheduler not in SAMPLERS:
            raise ValueError(
                f"unknown scheduler {params.scheduler!r}; {self.name} has {', '.join(SAMPLERS)}"
            )
        for side in ("width", "height"):
            value = getattr(params, side)
            if value % self.size_multiple:
                raise ValueError(
                    f"{side} {value} does not fit this model: use a multiple of "
                    f"{self.size_multiple}"
                )
        if self._extra_lora(params.lora) and params.lora not in self.loras:
            loaded = ", ".join(sorted(self.loras)) or "none (start with --lora NAME=FILE)"
            raise ValueError(f"unknown LoRA {params.lora!r}; loaded: {loaded}")
        sampler = self.samplers[params.scheduler]
        for strength in {1.0, params.strength}:  # text to image, and image to image
            sampler.schedule(params.steps, strength)
        self.structure.check(params)

    def batch_key(self, request: FrameRequest) -> Hashable:
        p = request.params
        # Requests that share controls batch together.
        controls = _controls(request)
        return (p.width, p.height, p.steps, p.scheduler, self._extra_lora(p.lora), controls)

    def warmup(self) -> None:
        """Run a text-to-image and an image-to-image frame at the default size.

        With ``compile``, this is when ``torch.compile`` compiles the UNet; if it
        cannot (no compiler for this device, an unsupported op), the UNet runs
        eagerly and the reason is logged. Call it on the thread that will run the
        frames: CUDA graphs are recorded per thread.
        """
        if self.options.compile:
            try:
                self._unet_forward = compile_unet(self.unet, self.device)
                self._warm()
            except Exception:
                log.warning("torch.compile failed; the UNet runs eagerly", exc_info=True)
                self._unet_forward = self.unet
                self._prepack_weights(self.unet)
        self._warm()
        for stats in self.cache_stats().values():
            stats.hits = stats.misses = 0

    def _prepack_weights(self, *modules: torch.nn.Module) -> None:
        if self.options.prepack_weights and self.device.type == "cpu":
            packed = sum(prepack_weights(module) for module in modules)
            log.info("%d layers pack their weights once for oneDNN", packed)

    def _warm(self) -> None:
        """A text-to-image and an image-to-image frame, and a frame with each control."""
        size = self.default_params
        image = np.zeros((size.height, size.width, 3), np.uint8)
        self(
            [
                FrameRequest(self.new_state(), size, None),
                FrameRequest(self.new_state(), size, image),
            ]
        )
        # Each control once, small: a control made for another model fails here, at start.
        side = 8 * self.size_multiple
        small = size.updated({"width": side, "height": side})
        for name in [*self.structure.controlnets, *self.structure.adapters]:
            controlled = small.updated({"controlnet": (name,)})
            self([FrameRequest(self.new_state(), controlled, image[:side, :side])])

    # One batch.

    @torch.inference_mode()
    def __call__(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        # 1. Inputs to the device; answer those that did not change from the last frame.
        pixels = [self._to_device(request.image) for request in requests]
        answered = [
            self._unchanged_output(request, image)
            for request, image in zip(requests, pixels, strict=True)
        ]
        for frame in answered:
            self._count("unchanged_inputs", frame is not None)
        todo = [index for index, frame in enumerate(answered) if frame is None]
        generated = iter(
            self._generate([requests[i] for i in todo], [pixels[i] for i in todo]) if todo else ()
        )
        return [frame if frame is not None else next(generated) for frame in answered]

    def _generate(
        self, requests: Sequence[FrameRequest], pixels: Sequence[torch.Tensor | None]
    ) -> list[np.ndarray]:
        first = requests[0].params
        steps, height, width = first.steps, first.height, first.width
        latent_shape = (
            self.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        sampler = self.samplers[first.scheduler]
        self._use_lora(first.lora)
        # A controlled request at strength 1 takes its input as structure only: text to
        # image guided by the lines, as diffusers' ControlNet pipeline (below 1, its
        # Img2Img twin, which also starts from the input).
        controlled = bool(_controls(requests[0]))
        init = [
            None if controlled and request.params.strength >= 1.0 else image
            for request, image in zip(requests, pixels, strict=True)
        ]
        text_only = [image is None for image in init]

        # 2. Prompt embeddings: from the shared LRU, blended, easing in a new prompt.
        embeddings = self._prompt_embeddings(requests)

        # 3. The noise each session's seed draws, as diffusers would draw it.
        noises = [
            self._noise(
                request.state,
                request.params.seed,
                latent_shape,
                posterior=not text and self.vae_samples_posterior,
                step_noises=sampler.step_noises(steps),
            )
            for request, text in zip(requests, text_only, strict=True)
        ]

        # 4. Input latents: the VAE encoder runs only on inputs that changed; control
        # pictures and adapter features only for inputs that changed.
        latents = self._input_latents(requests, init, (height, width), noises)  # (B, C, h, w)
        if controlled:
            self.structure.prepare(
                [request.state.control for request in requests],
                [request.params for request in requests],
                [image for image in pixels if image is not None],
                (height, width),
            )

        # 5. Each sample's schedule (text to image runs at strength 1), and the first sample.
        schedule = sampler.batch(
            [
                sampler.schedule(steps, 1.0 if text else r.params.strength)
                for r, text in zip(requests, text_only, strict=True)
            ]
        )
        initial = torch.stack([noise.initial for noise in noises])
        step_noise = torch.stack([noise.steps for noise in noises])  # (B, n, C, h, w)
        start = sampler.start(
            latents, initial, torch.tensor(text_only, device=self.device), schedule
        )

        # 6. Denoise and decode, in lanes on a CPU, to (H, W, 3) uint8.
        def denoise_and_decode(part: slice) -> tuple[torch.Tensor, np.ndarray]:
            sample = self._denoise(
                sampler,
                start[part],
                schedule.part(part),
                step_noise[part],
                embeddings[part],
                requests[part],
            )
            return sample, self._decode(sample)

        lanes = self.lanes.map(denoise_and_decode, len(requests))
        sample = torch.cat([lane_sample for lane_sample, _ in lanes])
        decoded = np.concatenate([lane_pixels for _, lane_pixels in lanes])

        # 7. Remember what each frame was made from, for the caches. Frames are
        # copied out of the batch so that a session holds only its own.
        frames = list(decoded) if len(requests) == 1 else [frame.copy() for frame in decoded]
        for index, (request, image) in enumerate(zip(requests, pixels, strict=True)):
            state: DiffusionState = request.state
            state.input_pixels = image
            state.output_params = self._frame_params(request.params)
            state.output = frames[index]
            state.output_latent = sample[index].clone()
        return frames

    def _denoise(
        self,
        sampler: FewStepSampler,
        sample: torch.Tensor,
        schedule: BatchSchedule,
        step_noise: torch.Tensor,
        embeddings: Sequence[PromptEmbedding],
        requests: Sequence[FrameRequest],
    ) -> torch.Tensor:
        """The sampler's steps from ``sample``, (B, C, h, w) float32; noise (B, n, C, h, w)."""
        count = len(schedule.timesteps)
        for k in range(count):
            model_input = sampler.model_input(sample, k, schedule)
            model_output = self.predict_noise(
                model_input, schedule.timesteps[k], embeddings, requests, Step(k, count)
            )
            noise = step_noise[:, k] if k < step_noise.shape[1] else None
            sample = sampler.step(sample, model_output, k, schedule, noise)
        return sample

    # Family hooks.

    def predict_noise(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeddings: Sequence[PromptEmbedding],
        requests: Sequence[FrameRequest],
        step: Step,
    ) -> torch.Tensor:
        """The UNet's output for a batch; families add guidance here."""
        return self.run_unet(sample, timesteps, embeddings, requests, step)

    def timestep_cond(self, requests: Sequence[FrameRequest]) -> torch.Tensor | None:
        """Extra timestep conditioning (LCM's guidance embedding); none by default."""
        return None

    def run_unet(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeddings: Sequence[PromptEmbedding],
        requests: Sequence[FrameRequest],
        step: Step,
    ) -> torch.Tensor:
        hidden = torch.stack([e.hidden for e in embeddings])
        added: dict[str, torch.Tensor] | None = None
        if self.prompts.dual:
            # SDXL's size conditioning: original size, crop origin, target size.
            sizes = [
                (r.params.height, r.params.width, 0, 0, r.params.height, r.params.width)
                for r in requests
            ]
            added = {
                "text_embeds": torch.stack([e.pooled for e in embeddings if e.pooled is not None]),
                "time_ids": torch.tensor(sizes, device=self.device, dtype=hidden.dtype),
            }
        sample = sample.to(self.dtype)
        controls: dict[str, Any] = {}
        if _controls(requests[0]):
            controls = self.structure.unet_kwargs(
                sample,
                timesteps,
                hidden,
                added,
                [r.state.control for r in requests],
                [r.params for r in requests],
                step,
            )
        output: torch.Tensor = self._unet_forward(
            sample,
            timesteps,
            encoder_hidden_states=hidden,
            timestep_cond=self.timestep_cond(requests),
            added_cond_kwargs=added,
            **controls,
        ).sample
        return output

    def _prompt_embeddings(self, requests: Sequence[FrameRequest]) -> list[PromptEmbedding]:
        """Each request's prompt embedding: blended, and eased from the last while it changes."""
        params = [request.params for request in requests]
        targets = self.prompts.blended([p.prompt for p in params], [p.prompt_blend for p in params])
        return [
            request.state.prompt.step(
                (p.prompt, p.prompt_blend), target, p.prompt_transition, p.prompt_blend
            )
            for request, p, target in zip(requests, params, targets, strict=True)
        ]

    # Steps of a batch.

    def _to_device(self, image: np.ndarray | None) -> torch.Tensor | None:
        if image is None:
            return None
        return torch.from_numpy(image).to(self.device, non_blocking=True)

    def _input_latents(
        self,
        requests: Sequence[FrameRequest],
        pixels: Sequence[torch.Tensor | None],
        size: tuple[int, int],
        noises: Sequence[SeedNoise],
    ) -> torch.Tensor:
        """(B, C, h, w) float32 latents, scaled as the UNet sees them; zeros for text only."""
        latent_size = (size[0] // self.vae_scale_factor, size[1] // self.vae_scale_factor)
        changed: list[int] = []
        for index, (request, image) in enumerate(zip(requests, pixels, strict=True)):
            if image is None:
                continue
            state: DiffusionState = request.state
            cached = state.input_posterior
            same = (
                cached is not None
                and cached.mean.shape[-2:] == latent_size
                and state.input_pixels is not None
                and torch.equal(state.input_pixels, image)
            )
            self._count("input_latents", same)
            if not same:
                changed.append(index)
        if changed:
            inputs = [pixels[i] for i in changed]
            batch = torch.stack([_to_model_input(x, size) for x in inputs if x is not None])
            batch = batch.to(self.vae.dtype, memory_format=self.memory_format)
            lanes = self.lanes.map(lambda part: self._encode(batch[part]), len(batch))
            posteriors = [posterior for lane in lanes for posterior in lane]
            for index, posterior in zip(changed, posteriors, strict=True):
                requests[index].state.input_posterior = posterior
        latents = []
        for request, image, noise in zip(requests, pixels, noises, strict=True):
            state = request.state
            if image is None:
                latents.append(
                    torch.zeros((self.latent_channels, *latent_size), device=self.device)
                )
                continue
            encoded = state.input_posterior
            assert encoded is not None  # encoded above if it was not cached
            latent = self._scale_latent(encoded, noise.posterior).float()
            feedback = request.params.latent_feedback
            if (
                feedback > 0
                and state.output_latent is not None
                and state.output_latent.shape == latent.shape
            ):
                latent = torch.lerp(latent, state.output_latent, feedback)
            latents.append(latent)
        return torch.stack(latents)

    def _encode(self, images: torch.Tensor) -> list[Posterior]:
        """(B, 3, H, W) in [-1, 1] -> each image's posterior."""
        encoded = self.vae.encode(images)
        if hasattr(encoded, "latent_dist"):
            dist = encoded.latent_dist
            return [Posterior(mean, std) for mean, std in zip(dist.mean, dist.std, strict=True)]
        return [Posterior(latent, None) for latent in encoded.latents]  # AutoencoderTiny

    def _scale_latent(self, posterior: Posterior, noise: torch.Tensor | None) -> torch.Tensor:
        """The posterior's sample with the seed's noise, scaled as diffusers' img2img does."""
        latent = posterior.mean
        if posterior.std is not None:
            assert noise is not None  # drawn for every image request with a KL VAE
            latent = posterior.mean + posterior.std * noise.to(posterior.std.dtype)
        scaling: float = self.vae.config.scaling_factor
        mean, std = self._latent_normalisation(latent)
        if mean is not None and std is not None:
            return (latent - mean) * scaling / std
        return scaling * latent

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, C, h, w) latents -> (B, H, W, 3) uint8, as diffusers' image processor rounds."""
        latents = latents.to(self.vae.dtype, memory_format=self.memory_format)
        mean, std = self._latent_normalisation(latents)
        if mean is not None and std is not None:
            latents = latents * std / self.vae.config.scaling_factor + mean
        else:
            latents = latents / self.vae.config.scaling_factor
        images = self.vae.decode(latents).sample
        array: np.ndarray = model_output_to_rgb(images).cpu().numpy()
        return array

    def _latent_normalisation(
        self, like: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A VAE config's per-channel latents_mean and latents_std (some SDXL VAEs), else None."""
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return None, None
        shape = (-1, 1, 1) if like.ndim == 3 else (1, -1, 1, 1)
        as_tensor = functools.partial(torch.tensor, device=like.device, dtype=like.dtype)
        return as_tensor(mean).view(shape), as_tensor(std).view(shape)

    def _noise(
        self,
        state: DiffusionState,
        seed: int | SeedBlend,
        shape: tuple[int, ...],
        *,
        posterior: bool,
        step_noises: int,
    ) -> SeedNoise:
        key = (seed, posterior, step_noises, *shape)
        hit = state.noise_key == key and state.noise is not None
        self._count("noise", hit)
        if not hit:
            count = int(posterior) + 1 + step_noises
            seeds = ((seed, 1.0),) if isinstance(seed, int) else seed
            each = [_draw(s, shape, count) for s, _ in seeds]  # (count, C, h, w) each
            weights = [w for _, w in seeds]
            # A seed blend mixes each draw (posterior, initial, step noises) by slerp.
            mixed = [blend([d[i] for d in each], weights, "slerp") for i in range(count)]
            draws = torch.stack(mixed).to(self.device)
            state.noise = SeedNoise(
                posterior=draws[0] if posterior else None,
                initial=draws[int(posterior)],
                steps=draws[int(posterior) + 1 :],
            )
            state.noise_key = key
        assert state.noise is not None
        return state.noise

    def _extra_lora(self, name: str) -> str:
        """The LoRA a session picks besides the standing one ("" for none)."""
        return "" if name == self.standing_lora else name

    def _use_lora(self, name: str) -> None:
        extra = self._extra_lora(name)
        if extra == self._active_lora or not self.loras:
            return
        adapters = [a for a in (self.standing_lora, extra) if a and a in self.loras]
        if adapters:
            self.unet.enable_lora()
            self.unet.set_adapters(adapters)
        else:
            self.unet.disable_lora()
        self._active_lora = extra

    def _count(self, cache: str, hit: bool) -> None:
        stats = self._stats[cache]
        if hit:
            stats.hits += 1
        else:
            stats.misses += 1

    def _frame_params(self, params: Params) -> Params:
        """The params that shape a frame's pixels: encoding and unused fields left out."""
        defaults = Params()
        return replace(
            params,
            output_format=defaults.output_format,
            quality=defaults.quality,
            similarity_threshold=defaults.similarity_threshold,
            **self.unused_params(params),
        )

    def _unchanged_output(
        self, request: FrameRequest, image: torch.Tensor | None
    ) -> np.ndarray | None:
        """The session's last frame, if this request would make (nearly) the same one."""
        state: DiffusionState = request.state
        if state.output is None or state.output_params != self._frame_params(request.params):
            return None
        last = state.input_pixels
        if state.prompt.running:
            return None  # the prompt is still easing in
        if image is None or last is None:
            return state.output if image is None and last is None else None
        if image.shape != last.shape:
            return None
        difference = frame_difference(image[None], last[None])[0]
        return state.output if difference.item() <= request.params.similarity_threshold else None


def _controls(request: FrameRequest) -> tuple[str, ...]:
    """The structure controls a request runs with: none without an input to follow."""
    return request.params.controlnet if request.image is not None else ()


def _draw(seed: int, shape: tuple[int, ...], count: int) -> torch.Tensor:
    """``count`` (C, h, w) noises from ``seed``, on the CPU, one at a time as diffusers draws.

    The same seed gives the same frame on any device, and diffusers' frame.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.cat([torch.randn((1, *shape), generator=generator) for _ in range(count)])


def _to_model_input(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) in [-1, 1], scaled to cover and centre-cropped.

    Normalised as diffusers' image processor does (``2 * (x / 255) - 1``), so an
    input at the model's size becomes the very tensor diffusers' img2img encodes.
    One fused kernel on CUDA (:mod:`livegen_kernels.model_input`).
    """
    return rgb_to_model_input(image[None], size)[0]


def compile_unet(unet: Any, device: torch.device) -> Any:
    """``torch.compile`` the UNet the way that pays on ``device``.

    CUDA: CUDA graphs ("reduce-overhead"). A few-step UNet at small batches is bound
    by kernel launches, not by the GPU: on an H100 at 512 px, float16, a prompt edit
    went from 63 ms eager to 17 ms, frames equal to eager within one level of 255
    (bench/README.md). CPU: inductor's freezing, which also packs the convolution
    weights for oneDNN once (see pipelines/prepack.py).
    """
    if device.type == "cuda":
        return torch.compile(unet, mode="reduce-overhead")
    if device.type == "cpu":
        return torch.compile(unet, options={"freezing": True})
    return torch.compile(unet)


def load_components(options: PipelineOptions) -> Components:
    """Load a diffusers pipeline folder's UNet, text encoders and autoencoder."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = resolve_model(options.model)
    index = read_model_index(folder)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    log.info(
        "weights in %s on %s (--dtype %s)", str(dtype).removeprefix("torch."), device, options.dtype
    )
    unet: Any = load_component(UNet2DConditionModel, folder, "unet", torch_dtype=dtype)
    tokenizers: list[Any] = [load_component(CLIPTokenizer, folder, "tokenizer")]
    encoders: list[Any] = [load_component(CLIPTextModel, folder, "text_encoder", torch_dtype=dtype)]
    if "text_encoder_2" in index:
        tokenizers.append(load_component(CLIPTokenizer, folder, "tokenizer_2"))
        encoders.append(
            load_component(CLIPTextModelWithProjection, folder, "text_encoder_2", torch_dtype=dtype)
        )
    dual = len(encoders) == 2
    if dual and index.get("requires_aesthetics_score"):
        raise ValueError(
            "this SDXL model conditions on an aesthetic score (a refiner): livegen serves "
            "base and distilled SDXL models"
        )
    vae_config = read_config(folder / "vae" / "config.json")
    vae: Any
    if options.tiny_vae:
        vae = load_component(
            AutoencoderTiny,
            resolve_model(options.tiny_vae, what="tiny VAE"),
            None,
            torch_dtype=dtype,
        )
        if vae.config.latent_channels != unet.config.in_channels:
            raise ValueError(
                f"the tiny VAE {options.tiny_vae} makes {vae.config.latent_channels}-channel "
                f"latents, the UNet takes {unet.config.in_channels}: pick the TAESD for this "
                "model family (taesd for SD 1/2, taesdxl for SDXL)"
            )
    else:
        # SDXL's VAE overflows in float16: its pipelines run it in float32 when the config
        # says force_upcast, and so does livegen (SD's pipelines do not upcast).
        upcast = dual and dtype == torch.float16 and vae_config.get("force_upcast", True)
        vae_dtype = torch.float32 if upcast else dtype
        vae = load_component(AutoencoderKL, folder, "vae", torch_dtype=vae_dtype)
    scheduler_config = read_config(folder / "scheduler" / "scheduler_config.json")
    for module in (unet, vae, *encoders):
        module.to(device).eval().requires_grad_(False)
    controls = StructureControls.load(
        options.controlnets, options.t2i_adapters, unet, device, dtype
    )
    return Components(
        unet=unet,
        vae=vae,
        prompts=PromptEncoder(
            tokenizers,
            encoders,
            max_entries=options.prompt_cache_size,
            # SDXL pipelines condition an empty negative prompt on zeros, as it was trained.
            zeros_for_empty_negative=dual and index.get("force_zeros_for_empty_prompt", True),
        ),
        scheduler_config=scheduler_config,
        vae_scale_factor=2 ** (len(vae_config["block_out_channels"]) - 1),
        controls=controls,
    )
