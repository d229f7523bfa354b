"""The model ``livegen serve`` generates with when no ``--pipeline`` is given.

SD-Turbo decoded and encoded by TAESD, as StreamDiffusion's demo serves, fetched
once into the Hugging Face cache. Where those weights are neither cached nor
downloadable (offline), the server says so in one line and serves passthrough,
so that the pages and clients still work; an explicit ``--pipeline`` never falls
back. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.config import ServerConfig

log = logging.getLogger(__name__)

DEFAULT_PIPELINE = "sd-turbo"
DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_TINY_VAE = "madebyollin/taesd"
# When those weights are not cached, how long the start may wait to learn whether the
# hub answers: a blocked network fails in this time, not huggingface_hub's 10 s.
HUB_PROBE_TIMEOUT_S = 3.0


def with_default_model(config: ServerConfig) -> ServerConfig:
    """``config`` with the default model, when its weights are cached or can be downloaded.

    Otherwise ``config`` as it is, serving passthrough, after one log line that says why and
    what to run. The hub cache is looked at first; only what is missing from it costs one
    request to the hub, bounded by :data:`HUB_PROBE_TIMEOUT_S`. The download itself, with
    its progress bar, happens when the pipeline loads.
    """
    from huggingface_hub import constants

    wanted = {DEFAULT_MODEL: "model_index.json"}  # the file each kind of folder is known by
    if config.tiny_vae is None:
        wanted[DEFAULT_TINY_VAE] = "config.json"
    missing = [repo for repo, marker in wanted.items() if not _in_hub_cache(repo, marker)]
    reason = _hub_unreachable(missing)
    if reason is None:
        chosen = replace(
            config,
            pipeline=DEFAULT_PIPELINE,
            model=DEFAULT_MODEL,
            tiny_vae=config.tiny_vae or DEFAULT_TINY_VAE,
        )
        log.info(
            "no --pipeline given: serving the default, %s with %s and --tiny-vae %s%s",
            chosen.pipeline,
            chosen.model,
            chosen.tiny_vae,
            f" (to download: {', '.join(missing)})" if missing else "",
        )
        return chosen
    fetch = " and ".join(f"`hf download {repo}`" for repo in missing)
    log.warning(
        "serving passthrough, which returns each input unchanged: the default model's weights "
        "(%s) are not in the Hugging Face cache (%s) and %s. To generate, run %s where there "
        "is internet and bring that cache here, or pass --pipeline with a local --model "
        "folder; --pipeline passthrough skips this check",
        ", ".join(missing),
        constants.HF_HUB_CACHE,
        reason,
        fetch,
    )
    return config


def _in_hub_cache(repo_id: str, marker: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, marker), str)


def _hub_unreachable(repo_ids: list[str]) -> str | None:
    """Why ``repo_ids`` cannot be downloaded now, or None when the hub answers for each."""
    from huggingface_hub import HfApi, constants

    if repo_ids and constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    for repo_id in repo_ids:
        try:
            HfApi().repo_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
        except Exception as exc:  # no network, a timeout, an HTTP error: all mean "not now"
            first_line = str(exc).partition("\n")[0]  # the warning stays one line
            return f"the hub does not answer for {repo_id} ({type(exc).__name__}: {first_line})"
    return None
