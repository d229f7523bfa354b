"""Finding and loading model weights: a local folder or a Hugging Face hub id.

A model is a diffusers pipeline folder (``model_index.json`` with ``unet/``,
``vae/``, ``text_encoder/``, ... beside it). A hub id is looked up in the local
Hugging Face cache first and downloaded (with a progress bar) only when it is
not there. Whatever goes wrong, the error names what was looked for and how to
provide it; each component logs how long it took, so a slow start shows where.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from pipelines.sources import TINY_VAE_HINT, names_a_local_folder, not_a_folder

log = logging.getLogger(__name__)

# Files a diffusers folder needs: configs, tokenizers, safetensors weights, in a
# pipeline's component folders or at the top of a one-model repository (TAESD). A
# single-file checkpoint beside a pipeline's folders (sd-turbo's 5 GB
# sd_turbo.safetensors), half-precision duplicates and other formats are skipped.
_HUB_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "*/*.safetensors",
    "diffusion_pytorch_model*.safetensors",
]
_HUB_SKIPPED = ["*.fp16.safetensors", "*fp16*", "*.bin", "*.ckpt", "*.onnx", "*.msgpack"]

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# For the errors: what to pass when a folder holds some other class than the one needed.
_CLASS_HINTS = {"AutoencoderTiny": TINY_VAE_HINT}


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), per PyTorch."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent in old builds
    return bool(probe and probe())


class ModelNotFound(ValueError):
    """The weights asked for are not here and cannot be fetched."""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on accelerators; on the CPU bfloat16 where it has AMX, else float32.

    AMX runs bfloat16 matrix products in hardware: an SD-Turbo frame at 256 px takes
    less than half the time it takes in float32 on a 2-core Sapphire Rapids
    (bench/README.md). Without AMX, bfloat16 arithmetic is emulated and slower.
    """
    if name == "auto":
        if device.type != "cpu":
            return torch.float16
        return torch.bfloat16 if cpu_has_amx() else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}") from None


def resolve_model(model: str | None, *, what: str = "model") -> Path:
    """The local folder holding ``model``: itself, or its copy in the hub cache."""
    if not model:
        raise ModelNotFound(
            f"no {what} given: pass --model with a local diffusers folder or a hub id "
            "such as stabilityai/sd-turbo"
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if names_a_local_folder(model):
        raise ModelNotFound(not_a_folder(what, model))
    return _from_hub(model, what)


def _from_hub(repo_id: str, what: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=_HUB_PATTERNS,
                ignore_patterns=_HUB_SKIPPED,
                local_files_only=True,
            )
        )
    except LocalEntryNotFoundError:
        pass  # not cached: try the network below
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFound(
            f"{what} {repo_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            "and HF_HUB_OFFLINE is set. Download it on a machine with internet "
            f"(`hf download {repo_id}`) and copy the cache, or pass a local folder"
        )
    log.info("downloading %s from the Hugging Face hub", repo_id)
    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_SKIPPED)
        )
    except Exception as exc:
        raise ModelNotFound(
            f"{what} {repo_id!r} is neither a local folder nor in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and downloading it failed: {exc}. Pass a local "
            "folder, or fetch it where there is internet (`hf download "
            f"{repo_id}`) and point HF_HOME at that cache"
        ) from None


def read_model_index(folder: Path) -> dict[str, Any]:
    """The component list of a diffusers pipeline folder."""
    if not (folder / "model_index.json").is_file():
        raise ModelNotFound(
            f"{folder} is not a diffusers pipeline folder: it has no model_index.json "
            "(save one with DiffusionPipeline.save_pretrained)"
        )
    return read_config(folder / "model_index.json")


def read_config(path: Path) -> dict[str, Any]:
    """A component's JSON config."""
    if not path.is_file():
        raise ModelNotFound(f"the model folder has no {path.parent.name}/{path.name}")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def load_component(cls: type[Any], folder: Path, subfolder: str | None, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on one component, logged with its size and time."""
    where = folder / subfolder if subfolder else folder
    if not where.is_dir():
        raise ModelNotFound(f"{folder} has no {subfolder}/ folder, which this pipeline needs")
    _check_class(cls, where)
    started = time.perf_counter()
    log.info("loading %s from %s", cls.__name__, where)
    try:
        component = cls.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot load {cls.__name__} from {where}: {exc}") from None
    elapsed = time.perf_counter() - started
    if isinstance(component, torch.nn.Module):
        millions = sum(p.numel() for p in component.parameters()) / 1e6
        log.info("loaded %s (%.1fM parameters) in %.2f s", cls.__name__, millions, elapsed)
    else:
        log.info("loaded %s in %.2f s", cls.__name__, elapsed)
    return component


def _check_class(cls: type[Any], where: Path) -> None:
    """Refuse a folder that holds another class than ``cls``, before loading it.

    diffusers would load an AutoencoderKL's folder as an AutoencoderTiny, leave every weight
    unset and fail later with "Cannot copy out of meta tensor". A diffusers model's
    config.json names its class; transformers' configs and tokenizers name none.
    """
    hint = f"; {_CLASS_HINTS[cls.__name__]}" if cls.__name__ in _CLASS_HINTS else ""
    config = where / "config.json"
    if not config.is_file():
        if (where / "model_index.json").is_file():
            raise ModelNotFound(
                f"{where} holds a whole diffusers pipeline (model_index.json), not the "
                f"{cls.__name__} needed here{hint}"
            )
        return
    found = read_config(config).get("_class_name")
    if found is not None and found != cls.__name__:
        raise ModelNotFound(
            f"{where} holds {found} (config.json's _class_name), not the {cls.__name__} "
            f"needed here{hint}"
        )
