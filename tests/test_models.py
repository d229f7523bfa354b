"""The test models of tests/models.py carry the published configs' behaviour.

Each family's folder loads through diffusers' own pipeline class and keeps every behaviour
field of the published files in tests/data/configs; the full size is the published config; the
float16-overflowing VAE and the LCM-LoRAs do what the tests that use them rely on.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import TinyModels
from tests.models import (
    FAMILIES,
    LCM_LORA_TARGETS,
    REPOSITORIES,
    TINY_AUTOENCODERS,
    UNBUILT,
    component_configs,
    make_vae_overflow_in_float16,
    published_config,
    tiny_autoencoder_config,
)

# Fields that change what a model computes, by component; the block types also fix the number
# of blocks. A field missing from a published file means the class default, as on loading.
BEHAVIOUR = {
    "scheduler": (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "trained_betas",
        "prediction_type",
        "timestep_spacing",
        "steps_offset",
        "set_alpha_to_one",
        "clip_sample",
        "original_inference_steps",
        "timestep_scaling",
        "skip_prk_steps",
        "interpolation_type",
        "use_karras_sigmas",
    ),
    "unet": (
        "sample_size",
        "in_channels",
        "out_channels",
        "down_block_types",
        "mid_block_type",
        "up_block_types",
        "act_fn",
        "flip_sin_to_cos",
        "freq_shift",
        "norm_num_groups",
        "norm_eps",
        "use_linear_projection",
        "upcast_attention",
        "time_cond_proj_dim",
        "addition_embed_type",
        "class_embed_type",
        "time_embedding_type",
        "resnet_time_scale_shift",
    ),
    "vae": (
        "sample_size",
        "in_channels",
        "out_channels",
        "latent_channels",
        "down_block_types",
        "up_block_types",
        "act_fn",
        "scaling_factor",
        "shift_factor",
        "force_upcast",
    ),
    "text_encoder": ("hidden_act", "max_position_embeddings", "layer_norm_eps", "eos_token_id"),
}
MODEL_INDEX_FLAGS = ("force_zeros_for_empty_prompt", "requires_aesthetics_score")
# Config entries that record who saved the file, not what the model is.
BOOKKEEPING = ("transformers_version", "architectures")


def folder(tiny_models: TinyModels, family: str) -> Path:
    return getattr(tiny_models, family.replace("-", "_"))  # type: ignore[no-any-return]


def json_value(value: Any) -> Any:
    """``value`` as a config file stores it (tuples become lists)."""
    return json.loads(json.dumps(value))


def expected_fields(model_class: type, published: dict[str, Any], component: str) -> dict:
    """The behaviour fields of ``component`` that ``model_class`` takes, as the published file
    sets them; a field the file leaves out is the class default, as on loading."""
    parameters = inspect.signature(model_class.__init__).parameters
    fields = BEHAVIOUR[component.removesuffix("_2")]
    if "config" in parameters:  # a transformers model: its config file names every field
        return {field: published[field] for field in fields if field in published}
    return {
        field: published[field] if field in published else json_value(parameters[field].default)
        for field in fields
        if field in parameters
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_with_its_published_pipeline_class(
    tiny_models: TinyModels, family: str
) -> None:
    from diffusers import DiffusionPipeline

    published = published_config(REPOSITORIES[family], "model_index.json")
    pipeline = DiffusionPipeline.from_pretrained(folder(tiny_models, family))

    assert type(pipeline).__name__ == published["_class_name"]
    for name, entry in published.items():
        if isinstance(entry, list) and entry[0] is not None and name not in UNBUILT:
            assert type(getattr(pipeline, name)).__name__ == entry[1], name
    for flag in MODEL_INDEX_FLAGS:
        if flag in published:
            assert pipeline.config[flag] == published[flag], flag


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_configs_keep_the_published_behaviour_fields(
    tiny_models: TinyModels, family: str
) -> None:
    import diffusers
    import transformers

    repository = REPOSITORIES[family]
    index = published_config(repository, "model_index.json")
    root = folder(tiny_models, family)
    for name, entry in index.items():
        if not isinstance(entry, list) or entry[0] is None or name in UNBUILT:
            continue
        library = diffusers if entry[0] == "diffusers" else transformers
        model_class = getattr(library, entry[1])
        if name.startswith("tokenizer"):
            published = published_config(repository, f"{name}/special_tokens_map.json")["pad_token"]
            pad = published["content"] if isinstance(published, dict) else published
            assert model_class.from_pretrained(root / name).pad_token == pad, name
            continue
        file = "scheduler_config.json" if name == "scheduler" else "config.json"
        published = published_config(repository, f"{name}/{file}")
        saved = json.loads((root / name / file).read_text())
        for field, expected in expected_fields(model_class, published, name).items():
            assert saved.get(field) == expected, f"{name}.{field}"
        if "block_out_channels" in published:
            assert len(saved["block_out_channels"]) == len(published["block_out_channels"])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_full_size_is_the_published_architecture(family: str) -> None:
    import diffusers
    import transformers

    repository = REPOSITORIES[family]
    index = published_config(repository, "model_index.json")
    for name, config in component_configs(family, "full").items():
        file = "scheduler/scheduler_config.json" if name == "scheduler" else f"{name}/config.json"
        published = published_config(repository, file)
        published.pop("torch_dtype", None)  # how the weights were stored, not the architecture
        assert config == published, name
        if name == "scheduler":
            continue
        library, class_name = index[name]
        model_class = getattr(diffusers if library == "diffusers" else transformers, class_name)
        # Built without memory, to show the classes take the published configs as they are.
        with torch.device("meta"):
            if library == "diffusers":
                built = dict(model_class.from_config(config).config)
            else:
                built = model_class(model_class.config_class.from_dict(config)).config.to_dict()
        for field, value in published.items():
            if field in built and field not in BOOKKEEPING and not field.startswith("_"):
                assert json_value(built[field]) == value, f"{name}.{field}"


@pytest.mark.parametrize("family", tuple(TINY_AUTOENCODERS))
def test_tiny_autoencoders_keep_the_published_scaling(tiny_models: TinyModels, family: str) -> None:
    published = tiny_autoencoder_config("full", family)
    assert published == published_config(TINY_AUTOENCODERS[family], "config.json")
    saved = json.loads((getattr(tiny_models, f"tae{family}") / "config.json").read_text())
    for field in ("scaling_factor", "shift_factor", "latent_magnitude", "latent_shift"):
        assert saved[field] == published[field], field
    assert len(saved["decoder_block_out_channels"]) == len(published["decoder_block_out_channels"])


def test_the_overflowing_vae_fails_in_float16_and_decodes_in_float32(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    from diffusers import AutoencoderKL

    broken = shutil.copytree(tiny_models.sd_base, tmp_path / "sd-base")
    make_vae_overflow_in_float16(broken)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def decode(root: Path, dtype: torch.dtype) -> torch.Tensor:
        vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype)
        with torch.no_grad():
            return vae.decode(latents.to(dtype)).sample.float()

    assert not decode(broken, torch.float16).isfinite().all()
    assert decode(tiny_models.sd_base, torch.float16).isfinite().all()
    torch.testing.assert_close(
        decode(broken, torch.float32), decode(tiny_models.sd_base, torch.float32), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize(
    ("base", "lora"), [("sd_base", "lcm_lora_sd"), ("sdxl_base", "lcm_lora_sdxl")]
)
def test_the_lcm_lora_loads_onto_its_base_and_changes_the_unet(
    tiny_models: TinyModels, base: str, lora: str
) -> None:
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(getattr(tiny_models, base))
    unet = pipeline.unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    added = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = (
            unet.config.projection_class_embeddings_input_dim
            - 6 * unet.config.addition_time_embed_dim
        )
        added = {
            "added_cond_kwargs": {
                "text_embeds": torch.randn(1, pooled),
                "time_ids": torch.ones(1, 6),
            }
        }

    def predict() -> torch.Tensor:
        with torch.no_grad():
            return unet(sample, 500, text, **added).sample

    before = predict()
    pipeline.load_lora_weights(str(getattr(tiny_models, lora)))

    adapted = {name for name, module in unet.named_modules() if hasattr(module, "lora_A")}
    assert {t for t in LCM_LORA_TARGETS if any(n.endswith(t) for n in adapted)} == set(
        LCM_LORA_TARGETS
    )
    assert (predict() - before).abs().max() > 1e-3
