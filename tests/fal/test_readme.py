"""The README's "fal.ai clients" section tells the truth: its shim is the one tested,
and its Python and Node examples run as written against livegen, given only the
connection settings it documents.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from server.tokens import mint_token
from tests.fal.conftest import JS_DIR, KEY, Tls, python_client_env, run_command

ROOT = Path(__file__).resolve().parents[2]
# What the README has the examples run with: a token for their app, not the API key.
APP_TOKEN_APPS = ["fal-ai/fast-lcm-diffusion"]


def section_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's fal.ai section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## fal.ai clients\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def test_the_readme_shim_is_the_tested_one():
    shim = section_blocks("js")[0]
    assert shim == (JS_DIR / "livegen-fal.mjs").read_text()


def prepare(folder: Path, sketch: Path, sources: dict[str, str]) -> None:
    """An app's folder: its sources and the sketch.jpg its example reads."""
    shutil.copy(sketch, folder / "sketch.jpg")
    for name, text in sources.items():
        (folder / name).write_text(text)


async def run_example(command: list[str], env: dict[str, str], folder: Path) -> str:
    """Run an example in ``folder``, where it must write both images; what it printed."""
    status, stdout, stderr = await run_command(command, env, folder)
    assert status == 0, f"{stdout}\n{stderr}"
    for name in ("fox", "owl"):
        assert (folder / f"{name}.jpg").read_bytes().startswith(b"\xff\xd8")
    return stdout


async def fal_key_as_the_readme_sets_it() -> str:
    """Run the README's ``export FAL_KEY=$(...)`` command, with the test's API key."""
    [line] = [
        line for line in section_blocks("sh")[0].splitlines() if line.startswith("export FAL_KEY=")
    ]
    command = line.removeprefix("export FAL_KEY=").replace("=...", f"={KEY}")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # where livegen is installed
    status, stdout, stderr = await run_command(
        ["bash", "-c", f"printf %s {command}"], {"PATH": path}
    )
    assert status == 0, stderr
    return stdout


async def test_the_readme_python_example_runs_as_written(
    start_server, tls: Tls, sketch: Path, tmp_path: Path
):
    server = await start_server(api_keys=KEY, tls_cert=str(tls.cert), tls_key=str(tls.key))
    [example] = section_blocks("python")[:1]
    prepare(tmp_path, sketch, {"app.py": example})

    fal_key = await fal_key_as_the_readme_sets_it()
    assert fal_key.count(".") == 2 and KEY not in fal_key  # a token (a JWT), not the key
    env = python_client_env(server, tls, fal_key)
    printed = await run_example([sys.executable, "app.py"], env, tmp_path)
    assert printed.splitlines()[0].startswith("fox 64 64 ")


async def test_the_readme_node_example_runs_as_written(
    start_server, node: list[str], sketch: Path, tmp_path: Path
):
    server = await start_server(api_keys=KEY)
    shim, example = section_blocks("js")[:2]
    url = f"http://127.0.0.1:{server.port}"
    assert "http://127.0.0.1:8000" in example  # the one setting to change
    app = example.replace("http://127.0.0.1:8000", url)
    prepare(tmp_path, sketch, {"app.mjs": app, "livegen-fal.mjs": shim})
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")  # as if installed there

    token = mint_token(KEY, APP_TOKEN_APPS, ttl_s=60)
    await run_example([*node, "app.mjs"], {"LIVEGEN_TOKEN": token}, tmp_path)
