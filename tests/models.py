"""Random-weight diffusers model folders, built locally without downloading anything: tiny
ones for unit tests (a 64x64 frame takes well under a second on a CPU) and the full SD-Turbo
architecture for the benchmark, plus a TAESD-architecture autoencoder and a LoRA file in
diffusers' format. The weights are random, so the images are noise, but the pipeline classes,
configs and folder layouts are those of the real models (with a small local vocabulary).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

FAMILIES = ("sd-turbo", "sdxl-turbo", "lcm")
SIZES = ("tiny", "full")
CPU = torch.device("cpu")

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# A few merges so that common words become one token, as with the real CLIP vocabulary.
MERGES = [
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("a", "t</w>"),
    ("o", "n</w>"),
]

# The schedule every SD 1.x/2.x/XL checkpoint was trained with; steps_offset=1 as in their
# configs (diffusers' SD pipelines warn about anything else).
BETAS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
}

# CLIP text encoders: tiny for tests; OpenCLIP ViT-H (SD 2.x) and, for SDXL, CLIP ViT-L
# plus OpenCLIP ViT-bigG for the full size.
TEXT_TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
TEXT_FULL = {
    "sd": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16
    ),
    "xl": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
    ),
    "xl_2": dict(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20
    ),
}
PROJECTION_FULL = {"sd": 512, "xl": 768, "xl_2": 1280}
ACT_FULL = {"sd": "gelu", "xl": "quick_gelu", "xl_2": "gelu"}

UNET_TINY: dict[str, Any] = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8,
    norm_num_groups=32,
    sample_size=8,
)
UNET_FULL = {
    "sd": dict(
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        sample_size=64,
    ),
    "xl": dict(
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        sample_size=64,
    ),
}
# SDXL's size-and-crop conditioning: six numbers, each embedded in this many dimensions.
TIME_EMBED_DIM = {"tiny": 8, "full": 256}
# LCM's guidance-scale embedding (``w`` in the paper), added to the timestep embedding.
TIME_COND_DIM = {"tiny": 32, "full": 256}

VAE: dict[str, dict[str, Any]] = {
    # Four blocks, as in the real VAE, so that the latents are 1/8 of the image.
    "tiny": dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8),
    "full": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768),
}
VAE_SCALING = {"sd-turbo": 0.18215, "lcm": 0.18215, "sdxl-turbo": 0.13025}


def build_tokenizer(path: Path) -> None:
    """Save at ``path`` a byte-level BPE CLIP tokenizer of a few hundred tokens."""
    _tokenizer().save_pretrained(path)
    # transformers 5 saves only tokenizer.json; older readers want the two classic files too.
    (Path(path) / "vocab.json").write_text(json.dumps(_vocab(), ensure_ascii=False))
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in MERGES)]
    (Path(path) / "merges.txt").write_text("\n".join(lines) + "\n")


def _vocab() -> dict[str, int]:
    """CLIP's layout: every byte character, the same with ``</w>``, the merges, the specials."""
    chars = sorted(ByteLevel.alphabet())
    tokens = [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in MERGES), BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def _tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(vocab=_vocab(), merges=MERGES, model_max_length=77)


def build_components(
    family: str = "sd-turbo", size: str = "tiny", seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The pipeline's components in memory (float32), keyed as its constructor's kwargs.

    The models are created on ``device``: torch's CPU random generator is serial, so the full
    size takes several seconds to initialise there and a fraction of a second on a GPU.
    """
    _check(family, size)
    tokenizer = _tokenizer()
    with _seeded(seed, torch.device(device)):
        if family == "sdxl-turbo":
            components = _xl_components(size, tokenizer)
        else:
            components = _sd_components(family, size, tokenizer)
        components["vae"] = _vae(family, size)
    return components | {"scheduler": _scheduler(family)}


def save_model(root: Path, *, family: str = "sd-turbo", size: str = "tiny", seed: int = 0) -> Path:
    """Save a complete diffusers pipeline folder at ``root``, loadable with from_pretrained."""
    components = build_components(family, size, seed)
    pipeline: DiffusionPipeline
    if family == "sdxl-turbo":
        pipeline = StableDiffusionXLPipeline(**components, add_watermarker=False)
    else:
        # The class the real repositories name in model_index.json.
        cls = LatentConsistencyModelPipeline if family == "lcm" else StableDiffusionPipeline
        pipeline = cls(
            **components,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipeline.save_pretrained(root)
    return Path(root)


def _check(family: str, size: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: expected one of {SIZES}")


@contextmanager
def _seeded(seed: int, device: torch.device = CPU) -> Iterator[None]:
    """Create tensors on ``device``, from generators seeded with ``seed``.

    Only the CPU's generator and ``device``'s are reseeded, and both are restored after, so
    that a build leaves the caller's own random streams (a test's seeding) as they were.
    """
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), torch.device(device):
        torch.random.default_generator.manual_seed(seed)
        if forked:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _sd_components(family: str, size: str, tokenizer: CLIPTokenizer) -> dict[str, Any]:
    text_config = _text_config(size, "sd", tokenizer)
    unet_config = UNET_TINY if size == "tiny" else UNET_FULL["sd"]
    extra = {"time_cond_proj_dim": TIME_COND_DIM[size]} if family == "lcm" else {}
    unet = UNet2DConditionModel(**unet_config, cross_attention_dim=text_config.hidden_size, **extra)
    return {"unet": unet, "text_encoder": CLIPTextModel(text_config), "tokenizer": tokenizer}


def _xl_components(size: str, tokenizer: CLIPTokenizer) -> dict[str, Any]:
    config, config_2 = _text_config(size, "xl", tokenizer), _text_config(size, "xl_2", tokenizer)
    unet = UNet2DConditionModel(
        **(UNET_TINY if size == "tiny" else UNET_FULL["xl"]),
        # The UNet attends to both encoders' hidden states, concatenated.
        cross_attention_dim=config.hidden_size + config_2.hidden_size,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM[size],
        # Six size/crop numbers plus the second encoder's pooled, projected embedding.
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM[size] + config_2.projection_dim,
    )
    return {
        "unet": unet,
        "text_encoder": CLIPTextModel(config),
        "text_encoder_2": CLIPTextModelWithProjection(config_2),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
    }


def _text_config(size: str, encoder: str, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    shape = TEXT_TINY if size == "tiny" else TEXT_FULL[encoder]
    return CLIPTextConfig(
        **shape,
        projection_dim=32 if size == "tiny" else PROJECTION_FULL[encoder],
        hidden_act="gelu" if size == "tiny" else ACT_FULL[encoder],
        max_position_embeddings=77,
        vocab_size=len(tokenizer),
        # The encoder pools at the first end-of-text token, so these must match the tokenizer.
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _vae(family: str, size: str) -> AutoencoderKL:
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        scaling_factor=VAE_SCALING[family],
        **VAE[size],
    )


def _scheduler(family: str) -> EulerDiscreteScheduler | LCMScheduler:
    if family == "lcm":
        return LCMScheduler(
            **BETAS,
            timestep_scaling=10.0,
            original_inference_steps=50,
            clip_sample=False,
            set_alpha_to_one=True,
        )
    return EulerDiscreteScheduler(**BETAS, timestep_spacing="trailing")


def build_tiny_autoencoder(size: str = "tiny", seed: int = 0) -> AutoencoderTiny:
    """A TAESD-architecture autoencoder: channels 8 when tiny, TAESD's own (64) when full."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: expected one of {SIZES}")
    with _seeded(seed):
        if size == "full":
            return AutoencoderTiny()
        # One block per stage keeps the three stride-2 stages, hence the 1/8 latents.
        return AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=4,
        )


def save_tiny_autoencoder(path: Path, seed: int = 0, *, size: str = "tiny") -> Path:
    """Save a TAESD-architecture autoencoder folder at ``path``."""
    build_tiny_autoencoder(size, seed).save_pretrained(path)
    # AutoencoderTiny records block_out_channels on its own and then logs a complaint when it
    # finds it in config.json; the real TAESD folders leave it out.
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    del config["block_out_channels"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(path)


def save_lora(path: Path, model_root: Path, seed: int = 1, rank: int = 4) -> Path:
    """Write at ``path`` (a .safetensors file) a random LoRA for the UNet in ``model_root``."""
    unet = UNet2DConditionModel.from_pretrained(Path(model_root) / "unet")
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        # Random A and B: the default zero B would make the LoRA change nothing.
        init_lora_weights=False,
    )
    with _seeded(seed):
        unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=layers, weight_name=path.name
    )
    return path
