"""Where weights come from, in words a user can act on; nothing here imports torch.

A model (or a tiny VAE) is named by a local folder or a Hugging Face hub id
(``owner/name``). The server's configuration checks local folders with these
rules before torch loads, so that a typo fails in a second; the loaders use the
same rules and messages when they resolve the name.
"""

from __future__ import annotations

from pathlib import Path

TINY_VAE_HINT = (
    "a tiny VAE is TAESD, a small autoencoder (AutoencoderTiny) that stands in for the model's "
    "own VAE: madebyollin/taesd for SD 1/2 and SD-Turbo, madebyollin/taesdxl for SDXL"
)
_HOW_TO_GIVE = {
    "model": "the folder a diffusers pipeline was saved to (it holds model_index.json), or a "
    "hub id such as stabilityai/sd-turbo",
    "tiny VAE": "a folder that holds a tiny autoencoder's config.json and weights, or its hub "
    f"id; {TINY_VAE_HINT}",
}


def names_a_local_folder(name: str) -> bool:
    """Whether ``name`` can only mean a local folder, not a hub id (``owner/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") != 1


def not_a_folder(what: str, name: str) -> str:
    """The error for a ``what`` ("model" or "tiny VAE") named by a folder that is not there."""
    looked_for = Path(name).expanduser().resolve()
    return f"{what} {name!r} is not a folder: looked for {looked_for}. Pass {_HOW_TO_GIVE[what]}"
