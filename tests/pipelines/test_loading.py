"""Loading models: local folders, hub ids, and the errors when weights are missing."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from pipelines import PipelineOptions, create_pipeline
from pipelines.loading import ModelNotFound, cpu_has_amx, resolve_dtype
from tests.conftest import TinyModels


def test_a_missing_folder_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFound, match=f"looked for {missing}"):
        create_pipeline("sd-turbo", PipelineOptions(model=str(missing)))


def test_no_model_at_all_says_how_to_give_one() -> None:
    with pytest.raises(ModelNotFound, match="pass --model with a local diffusers folder"):
        create_pipeline("sd-turbo", PipelineOptions(model=None))


def test_a_folder_that_is_not_a_diffusers_pipeline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="has no model_index.json"):
        create_pipeline("sd-turbo", PipelineOptions(model=str(tmp_path)))


def test_a_folder_missing_a_component_names_it(tiny_models: TinyModels, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_models.sd_turbo, tmp_path / "model")
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(ModelNotFound, match="has no text_encoder/ folder"):
        create_pipeline("sd-turbo", PipelineOptions(model=str(broken)))


def test_a_hub_id_not_in_the_cache_while_offline_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound, match="hf download stabilityai/sd-turbo") as error:
        create_pipeline("sd-turbo", PipelineOptions(model="stabilityai/sd-turbo"))
    assert str(tmp_path) in str(error.value)


def test_a_missing_lora_file_is_named(tiny_models: TinyModels, tmp_path: Path) -> None:
    options = PipelineOptions(model=str(tiny_models.sd_turbo), loras={"x": str(tmp_path / "x.st")})
    with pytest.raises(ModelNotFound, match="LoRA 'x': no file at"):
        create_pipeline("lcm", options)


def test_a_lora_for_another_model_is_refused(tiny_models: TinyModels) -> None:
    # The LoRA was made for the sd-turbo UNet; the SDXL one has other layers.
    options = PipelineOptions(model=str(tiny_models.sdxl_turbo), loras={"x": str(tiny_models.lora)})
    with pytest.raises(ValueError, match="LoRA 'x' from .* does not fit this UNet"):
        create_pipeline("lcm", options)


def test_a_tiny_vae_with_other_latents_is_refused(tiny_models: TinyModels, tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    # SD3's TAESD makes 16-channel latents; SD 1/2 UNets take 4.
    wrong = tmp_path / "taesd3"
    channels = (8, 8, 8, 8)
    AutoencoderTiny(
        encoder_block_out_channels=channels, decoder_block_out_channels=channels, latent_channels=16
    ).save_pretrained(wrong)
    options = PipelineOptions(model=str(tiny_models.sd_turbo), tiny_vae=str(wrong))
    with pytest.raises(ValueError, match="makes 16-channel latents, the UNet takes 4"):
        create_pipeline("sd-turbo", options)


@pytest.mark.parametrize("given", ["vae", "."], ids=["a full VAE", "a whole pipeline"])
def test_a_tiny_vae_folder_that_holds_something_else_is_refused_before_loading(
    tiny_models: TinyModels, given: str
) -> None:
    # diffusers would load either as an AutoencoderTiny with no weights set, which fails
    # later with "Cannot copy out of meta tensor".
    folder = tiny_models.sd_turbo / given
    holds = "AutoencoderKL" if given == "vae" else "a whole diffusers pipeline"
    options = PipelineOptions(model=str(tiny_models.sd_turbo), tiny_vae=str(folder))
    with pytest.raises(ModelNotFound, match=f"holds {holds}") as error:
        create_pipeline("sd-turbo", options)
    assert "madebyollin/taesd for SD 1/2 and SD-Turbo, madebyollin/taesdxl" in str(error.value)


def test_a_missing_tiny_vae_folder_says_what_a_tiny_vae_is(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    options = PipelineOptions(model=str(tiny_models.sd_turbo), tiny_vae=str(tmp_path / "taesd"))
    with pytest.raises(ModelNotFound, match="holds a tiny autoencoder's config.json") as error:
        create_pipeline("sd-turbo", options)
    assert "madebyollin/taesd" in str(error.value)
    assert "model_index.json" not in str(error.value)


def test_from_the_hub_come_a_pipelines_components_not_its_single_file_checkpoint() -> None:
    from huggingface_hub.utils import filter_repo_objects

    from pipelines.loading import _HUB_PATTERNS, _HUB_SKIPPED

    sd_turbo = [
        "model_index.json",
        "sd_turbo.safetensors",  # the whole model again, 5 GB, for single-file loaders
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
    ]
    taesd = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]

    def fetched(files: list[str]) -> list[str]:
        return list(
            filter_repo_objects(files, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_SKIPPED)
        )

    assert fetched(sd_turbo) == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
    ]
    assert fetched(taesd) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_loading_logs_each_component_with_its_time(
    tiny_models: TinyModels, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.loading"):
        create_pipeline("sd-turbo", PipelineOptions(model=str(tiny_models.sdxl_turbo)))
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded")]
    assert [message.split()[1] for message in loaded] == [
        "UNet2DConditionModel",
        "CLIPTokenizer",
        "CLIPTextModel",
        "CLIPTokenizer",
        "CLIPTextModelWithProjection",
        "AutoencoderKL",
    ]


def test_loading_says_which_dtype_auto_chose(
    tiny_models: TinyModels, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.diffusion"):
        create_pipeline("sd-turbo", PipelineOptions(model=str(tiny_models.sd_turbo), device="cpu"))
    chosen = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    assert f"weights in {chosen} on cpu (--dtype auto)" in caplog.messages


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's CPU flags")
def test_auto_dtype_is_bfloat16_on_a_cpu_with_amx_and_float32_on_one_without() -> None:
    flags = Path("/proc/cpuinfo").read_text().split()
    assert cpu_has_amx() == ("amx_tile" in flags)
    expected = torch.bfloat16 if "amx_tile" in flags else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'half'; use auto, float16"):
        resolve_dtype("half", torch.device("cpu"))
