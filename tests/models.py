"""Random-weight diffusers model folders built from the published configs, offline.

Every model is made from the config files of its real repository, kept in ``tests/data/configs``
(``tests/data/configs/README.md`` says where each came from). ``size="full"`` is the published
config unchanged (the benchmark runs the full SD-Turbo architecture); ``size="tiny"`` shrinks only
widths and depths, so that a 64x64 frame takes well under a second on a CPU, and keeps every field
that changes behaviour (schedule, prediction type, spacing, VAE scaling and upcasting, the
guidance and size/crop embeddings, block types, activations, padding tokens) at its published
value. Also here: TAESD and TAESDXL, a style LoRA, an LCM-LoRA shaped like the published ones,
and a VAE that overflows in float16. The weights are random, so the images are noise; the
vocabulary is a small local one.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from diffusers import AutoencoderTiny, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

CONFIGS = Path(__file__).parent / "data" / "configs"
# Each family's published pipeline repository, as its folder under CONFIGS.
REPOSITORIES = {
    "sd-turbo": "stabilityai--sd-turbo",
    "sdxl-turbo": "stabilityai--sdxl-turbo",
    "lcm": "SimianLuo--LCM_Dreamshaper_v7",
    "sd-base": "runwayml--stable-diffusion-v1-5",
    "sdxl-base": "stabilityai--stable-diffusion-xl-base-1.0",
}
TINY_AUTOENCODERS = {"sd": "madebyollin--taesd", "sdxl": "madebyollin--taesdxl"}
FAMILIES = tuple(REPOSITORIES)
SIZES = ("tiny", "full")
CPU = torch.device("cpu")

# Components the real repositories ship that these folders leave out: the safety checker is a
# model of its own, and nothing here runs it or an image prompt.
UNBUILT = ("safety_checker", "feature_extractor", "image_encoder")

# Tiny widths. UNet channels stay multiples of the published 32 norm groups.
TINY_UNET_CHANNELS = (32, 64, 64, 64)
TINY_HEAD_CHANNELS = 16
TINY_TRANSFORMER_DEPTH = 2  # SDXL's (1, 2, 10) becomes (1, 2, 2)
TINY_TIME_EMBED_DIM = 8  # SDXL embeds each size/crop number in 256 dimensions
# Widths that differ from each other, as the real ones do (768, 1280 and SDXL's pooled 1280):
# taking one encoder's output, or its unprojected pooled output, for another breaks shapes.
TINY_TEXT = {
    "text_encoder": {"hidden_size": 32, "projection_dim": 32},
    "text_encoder_2": {"hidden_size": 48, "projection_dim": 40},
}
TINY_TEXT_SHAPE = {"intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
TINY_VAE = {"block_out_channels": (16, 32, 32, 32), "layers_per_block": 1, "norm_num_groups": 8}
TINY_TAESD_CHANNELS = 8

# The target modules of diffusers' LCM-LoRA training scripts
# (examples/consistency_distillation/train_lcm_distill_lora_sd*.py), which made the published
# latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl: attention, feed-forward, the transformer
# projections, and every ResNet and resampling conv.
LCM_LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
]

# A conv of the VAE decoder whose output feeds only a GroupNorm (ResnetBlock2D's conv1 -> norm2):
# the norm divides any scale back out, so scaling this conv changes nothing in float32.
OVERFLOWING_CONV = "decoder.mid_block.resnets.0.conv1"
# Its largest weight after scaling: float16 holds it (casting the VAE must not be what fails),
# but a sum of hundreds of such products does not (float16 tops out at 65504).
OVERFLOW_WEIGHT = 2.0**14

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


def published_config(repository: str, file: str) -> dict[str, Any]:
    """The published ``file`` (a path inside the repository) of ``repository``'s CONFIGS folder."""
    return json.loads((CONFIGS / repository / file).read_text())


def component_configs(family: str = "sd-turbo", size: str = "tiny") -> dict[str, dict[str, Any]]:
    """Each model component's config (and the scheduler's), keyed as in model_index.json."""
    _check(family, size)
    repository = REPOSITORIES[family]
    index = published_config(repository, "model_index.json")
    encoders = [name for name in ("text_encoder", "text_encoder_2") if name in index]
    text = {name: published_config(repository, f"{name}/config.json") for name in encoders}
    for config in text.values():
        # The dtype the weights were stored in, which transformers would otherwise load them as.
        config.pop("torch_dtype", None)
    configs = {
        "scheduler": published_config(repository, "scheduler/scheduler_config.json"),
        "unet": published_config(repository, "unet/config.json"),
        "vae": published_config(repository, "vae/config.json"),
        **text,
    }
    if size == "full":
        return configs
    tiny_text = {name: _tiny_text(name, config) for name, config in text.items()}
    unet = _tiny_unet(configs["unet"], text, tiny_text)
    return configs | tiny_text | {"unet": unet, "vae": _tiny_vae(configs["vae"])}


def _blocks(config: dict[str, Any], channels: tuple[int, ...]) -> dict[str, Any]:
    """``channels`` cut to the published number of blocks, which never changes."""
    return {"block_out_channels": list(channels[: len(config["block_out_channels"])])}


def _tiny_vae(config: dict[str, Any]) -> dict[str, Any]:
    return config | TINY_VAE | _blocks(config, TINY_VAE["block_out_channels"])


def _tiny_text(name: str, config: dict[str, Any]) -> dict[str, Any]:
    # hidden_act, max_position_embeddings and the special token ids stay published: the pooled
    # embedding is taken at the end-of-text token, which the published ids make transformers
    # find as the highest token id, as it is in the local vocabulary too.
    return config | TINY_TEXT[name] | TINY_TEXT_SHAPE | {"vocab_size": len(_vocabulary())}


def _tiny_unet(
    config: dict[str, Any], text: dict[str, dict[str, Any]], tiny_text: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    channels = _blocks(config, TINY_UNET_CHANNELS)["block_out_channels"]
    # diffusers reads the published ``attention_head_dim`` as the number of heads.
    heads = [width // TINY_HEAD_CHANNELS for width in channels]
    tiny = config | {
        "block_out_channels": channels,
        "layers_per_block": 1,
        "attention_head_dim": heads if isinstance(config["attention_head_dim"], list) else heads[0],
        # The UNet attends to all the text encoders' hidden states, concatenated.
        "cross_attention_dim": sum(encoder["hidden_size"] for encoder in tiny_text.values()),
    }
    depth = config.get("transformer_layers_per_block", 1)
    if isinstance(depth, list):
        tiny["transformer_layers_per_block"] = [min(n, TINY_TRANSFORMER_DEPTH) for n in depth]
    if config.get("addition_embed_type") == "text_time":
        # SDXL's added condition: each size/crop number embedded in addition_time_embed_dim
        # dimensions, then the second encoder's pooled, projected prompt.
        pooled = text["text_encoder_2"]["projection_dim"]
        numbers = (config["projection_class_embeddings_input_dim"] - pooled) // config[
            "addition_time_embed_dim"
        ]
        tiny |= {
            "addition_time_embed_dim": TINY_TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": numbers * TINY_TIME_EMBED_DIM
            + tiny_text["text_encoder_2"]["projection_dim"],
        }
    return tiny


def _vocabulary() -> dict[str, int]:
    """CLIP's layout: every byte character, the same with ``</w>``, the merges, the specials."""
    chars = sorted(ByteLevel.alphabet())
    tokens = [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in MERGES), BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def _tokenizer(repository: str, name: str) -> CLIPTokenizer:
    # SD 2.x and SDXL's second tokenizer pad with "!", SD 1.x with end-of-text; the padding
    # tokens' hidden states reach the UNet, so the published choice is kept.
    pad = published_config(repository, f"{name}/special_tokens_map.json")["pad_token"]
    if isinstance(pad, dict):  # written as an AddedToken
        pad = pad["content"]
    return CLIPTokenizer(vocab=_vocabulary(), merges=MERGES, model_max_length=77, pad_token=pad)


def build_components(
    family: str = "sd-turbo", size: str = "tiny", seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The pipeline's components in memory (float32), keyed as its constructor's kwargs.

    The models are created on ``device``: torch's CPU random generator is serial, so the full
    size takes several seconds to initialise there and a fraction of a second on a GPU.
    """
    configs = component_configs(family, size)
    repository = REPOSITORIES[family]
    index = published_config(repository, "model_index.json")
    scheduler = configs.pop("scheduler")
    components: dict[str, Any] = {
        "scheduler": getattr(diffusers, scheduler["_class_name"]).from_config(scheduler)
    }
    with _seeded(seed, torch.device(device)):
        for name, config in configs.items():
            library, class_name = index[name]
            if library == "diffusers":
                components[name] = getattr(diffusers, class_name).from_config(config)
            else:
                model_class = getattr(transformers, class_name)
                components[name] = model_class(model_class.config_class.from_dict(config))
    for name in ("tokenizer", "tokenizer_2"):
        if name in index:
            components[name] = _tokenizer(repository, name)
    return components


def save_model(root: Path, *, family: str = "sd-turbo", size: str = "tiny", seed: int = 0) -> Path:
    """Save at ``root`` a pipeline folder of ``family``, loadable with its ``from_pretrained``.

    The pipeline class and the flags in model_index.json (force_zeros_for_empty_prompt, ...) are
    the published ones, except that there is no safety checker to require.
    """
    components = build_components(family, size, seed)
    index = published_config(REPOSITORIES[family], "model_index.json")
    pipeline_class = getattr(diffusers, index["_class_name"])
    accepted = inspect.signature(pipeline_class).parameters
    flags = {
        key: value
        for key, value in index.items()
        if key in accepted and not key.startswith("_") and not isinstance(value, list)
    }
    # The published null means "watermark if the package is installed"; frames must not depend
    # on what happens to be installed.
    overrides = {"requires_safety_checker": False, "add_watermarker": False}
    flags |= {key: value for key, value in overrides.items() if key in accepted}
    unbuilt = {name: None for name in UNBUILT if name in accepted}
    pipeline_class(**components, **unbuilt, **flags).save_pretrained(root)
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


def tiny_autoencoder_config(size: str = "tiny", family: str = "sd") -> dict[str, Any]:
    """TAESD's (``family="sd"``) or TAESDXL's config: published, or with narrow channels."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: expected one of {SIZES}")
    if family not in TINY_AUTOENCODERS:
        raise ValueError(f"unknown family {family!r}: expected one of {tuple(TINY_AUTOENCODERS)}")
    config = published_config(TINY_AUTOENCODERS[family], "config.json")
    if size == "full":
        return config
    stages = len(config["encoder_block_out_channels"])
    # One block per stage keeps the three stride-2 stages, hence the 1/8 latents.
    return config | {
        "encoder_block_out_channels": [TINY_TAESD_CHANNELS] * stages,
        "decoder_block_out_channels": [TINY_TAESD_CHANNELS] * stages,
        "num_encoder_blocks": [1] * stages,
        "num_decoder_blocks": [1] * stages,
    }


def build_tiny_autoencoder(
    size: str = "tiny", seed: int = 0, family: str = "sd"
) -> AutoencoderTiny:
    """TAESD (``family="sd"``) or TAESDXL (``"sdxl"``) from its published config."""
    config = tiny_autoencoder_config(size, family)
    with _seeded(seed):
        return AutoencoderTiny.from_config(config)


def save_tiny_autoencoder(
    path: Path, seed: int = 0, *, size: str = "tiny", family: str = "sd"
) -> Path:
    """Save a TAESD (``family="sd"``) or TAESDXL (``"sdxl"``) folder at ``path``."""
    build_tiny_autoencoder(size, seed, family).save_pretrained(path)
    # AutoencoderTiny records block_out_channels on its own and then logs a complaint when it
    # finds it in config.json; the published folders leave it out.
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    del config["block_out_channels"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(path)


def save_lora(path: Path, model_root: Path, seed: int = 1, rank: int = 4) -> Path:
    """Write at ``path`` (a .safetensors file) a random style LoRA for ``model_root``'s UNet."""
    # Attention only, under diffusers' older key names (``to_q.lora.down``), as many LoRAs are.
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    return _save_random_lora(path, model_root, targets, seed, rank, convert_state_dict_to_diffusers)


def save_lcm_lora(path: Path, model_root: Path, seed: int = 2, rank: int = 4) -> Path:
    """Write at ``path`` a random LoRA on the layers the published LCM-LoRAs train.

    The file is in diffusers' format, for ``load_lora_weights`` on an SD 1.5 or SDXL base.
    """
    # Under PEFT's key names (``lora_A``): diffusers' renaming covers only the attention layers,
    # and a file that mixes both namings loads without its attention layers.
    return _save_random_lora(path, model_root, LCM_LORA_TARGETS, seed, rank, lambda layers: layers)


def _save_random_lora(
    path: Path,
    model_root: Path,
    targets: list[str],
    seed: int,
    rank: int,
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> Path:
    unet = UNet2DConditionModel.from_pretrained(Path(model_root) / "unet")
    # Random A and B: the default zero B would make the LoRA change nothing.
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    with _seeded(seed):
        unet.add_adapter(config)
    index = json.loads((Path(model_root) / "model_index.json").read_text())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    getattr(diffusers, index["_class_name"]).save_lora_weights(
        path.parent, unet_lora_layers=rename(get_peft_model_state_dict(unet)), weight_name=path.name
    )
    return path


def make_vae_overflow_in_float16(folder: Path) -> None:
    """Rewrite the VAE weights of the pipeline ``folder`` so that its decoder overflows in
    float16 (non-finite pixels: black or garbage frames) and decodes as before in float32.

    This is what SD-XL's published VAE does in float16, and why its config says force_upcast.
    """
    weights_file = Path(folder) / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weight, bias = f"{OVERFLOWING_CONV}.weight", f"{OVERFLOWING_CONV}.bias"
    scale = OVERFLOW_WEIGHT / weights[weight].abs().max()
    weights[weight] = weights[weight] * scale
    weights[bias] = weights[bias] * scale
    save_file(weights, weights_file, metadata={"format": "pt"})


def save_controlnet(
    path: Path,
    model_root: Path,
    seed: int = 3,
    conditioning_channels: tuple[int, ...] = (8, 8, 16, 16),
) -> Path:
    """Save at ``path`` a random ControlNet for ``model_root``'s UNet (SD or SDXL).

    Built from the UNet's config as ``ControlNetModel.from_unet`` builds it, then every
    weight drawn at random: a fresh ControlNet's zero convolutions would add nothing, and a
    test that compares frames could not see a control that is ignored. The published
    ControlNets embed the control picture with ``conditioning_channels`` (16, 32, 96, 256).
    """
    unet = UNet2DConditionModel.from_pretrained(Path(model_root) / "unet")
    with _seeded(seed):
        # Downsamples the control picture 8x, to the latents' size, as the published ones do.
        controlnet = diffusers.ControlNetModel.from_unet(
            unet,
            conditioning_embedding_out_channels=conditioning_channels,
            load_weights_from_unet=False,
        )
        _randomise(controlnet)
        # Stronger weights where the control picture comes in: with small ones every
        # layer shrinks it, and a wrong picture would change the frame too little to see.
        _randomise(controlnet.controlnet_cond_embedding, std=0.2)
    controlnet.save_pretrained(path)
    return Path(path)


def save_t2i_adapter(
    path: Path, model_root: Path, seed: int = 4, in_channels: int = 3, res_blocks: int = 1
) -> Path:
    """Save at ``path`` a random T2I-Adapter for ``model_root``'s UNet, in the published
    layouts: SD's a feature per down block, SDXL's four (the last block's width twice),
    from a picture shrunk 16x. The published ones have 2 ``res_blocks``."""
    unet = UNet2DConditionModel.from_pretrained(Path(model_root) / "unet")
    channels = list(unet.config.block_out_channels)
    xl = unet.config.addition_embed_type == "text_time"
    with _seeded(seed):
        adapter = diffusers.T2IAdapter(
            in_channels=in_channels,
            channels=[*channels, channels[-1]] if xl else channels,
            num_res_blocks=res_blocks,
            downscale_factor=16 if xl else 8,
            adapter_type="full_adapter_xl" if xl else "full_adapter",
        )
        _randomise(adapter)
    adapter.save_pretrained(path)
    return Path(path)


def _randomise(model: torch.nn.Module, std: float = 0.05) -> None:
    """Every weight drawn from N(0, std^2), biases too (zero-initialised layers included)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, std)
