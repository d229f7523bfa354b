"""``livegen serve`` configuration: flags over ``LIVEGEN_*`` variables over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser, server_config
from server.config import MissingFile, ServerConfig


def parse_stating(argv: list[str], environ: dict[str, str]) -> tuple[ServerConfig, bool]:
    """The configuration, and whether it leaves --pipeline to the default model."""
    parser = build_parser(environ)
    return server_config(parser, parser.parse_args(["serve", *argv]))


def parse(argv: list[str], environ: dict[str, str]) -> ServerConfig:
    return parse_stating(argv, environ)[0]


def test_defaults_bind_to_loopback_and_leave_the_pipeline_to_the_default_model():
    config, default_model = parse_stating([], {})

    assert (config.host, config.port) == ("127.0.0.1", 8000)
    # What serves when the default model's weights are not here (server.config).
    assert (config.pipeline, default_model) == ("passthrough", True)
    assert config.model is None and isinstance(config.web_root, Path)


@pytest.mark.parametrize(
    ("argv", "environ"),
    [(["--pipeline", "passthrough"], {}), ([], {"LIVEGEN_PIPELINE": "passthrough"})],
)
def test_a_pipeline_named_by_flag_or_variable_is_served_as_named(argv, environ):
    assert parse_stating(argv, environ) == (parse(["--pipeline", "passthrough"], {}), False)


def test_the_help_says_what_an_unset_pipeline_serves(capsys):
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["serve", "--help"])

    help_text = " ".join(capsys.readouterr().out.split())
    assert "default sd-turbo with stabilityai/sd-turbo and madebyollin/taesd" in help_text


def test_a_model_without_a_pipeline_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        parse(["--model", "stabilityai/sd-turbo"], {})

    assert exited.value.code == 2
    assert "--model needs --pipeline" in capsys.readouterr().err


def test_environment_variables_set_options_and_flags_win_over_them():
    environ = {"LIVEGEN_PORT": "9000", "LIVEGEN_SESSION_GRACE_S": "2.5", "LIVEGEN_MODEL": "m"}
    config = parse(["--port", "9100", "--pipeline", "sd-turbo"], environ)

    assert config.port == 9100
    assert config.session_grace_s == 2.5
    assert config.model == "m"


def test_a_bad_environment_value_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        parse([], {"LIVEGEN_CODEC_THREADS": "many"})

    assert exited.value.code == 2
    assert "--codec-threads: invalid int value: 'many'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, 64),
        (["--max-sessions", "auto"], {}, "auto"),
        ([], {"LIVEGEN_MAX_SESSIONS": "auto"}, "auto"),
        (["--max-sessions", "3"], {"LIVEGEN_MAX_SESSIONS": "auto"}, 3),
    ],
)
def test_max_sessions_is_a_number_or_auto(argv, environ, expected):
    assert parse(argv, environ).max_sessions == expected


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_max_sessions_that_is_neither_says_what_works(capsys, value):
    with pytest.raises(SystemExit) as exited:
        parse(["--max-sessions", value], {})

    assert exited.value.code == 2
    assert (
        f"--max-sessions: expected a number of sessions (1 or more) or auto, got {value!r}"
        in capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="--max-sessions: expected a number"):
        ServerConfig(max_sessions=0)


def test_limits_come_from_the_configuration():
    config = parse(["--max-image-pixels", "1000", "--messages-per-s", "5"], {})

    assert config.limits.max_image_pixels == 1000
    assert config.limits.messages_per_s == 5.0
    assert parse([], {"LIVEGEN_MESSAGE_BURST": "7"}).limits.message_burst == 7


def test_pipeline_options_come_from_the_configuration():
    options = parse(["--cpu-lanes", "1", "--prepack-weights=false"], {}).pipeline_options

    assert (options.cpu_lanes, options.prepack_weights) == (1, False)
    assert parse([], {"LIVEGEN_CPU_LANES": "3"}).pipeline_options.cpu_lanes == 3


def test_fewer_than_one_cpu_lane_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        parse(["--cpu-lanes", "0"], {})

    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: livegen [-h] {serve,token} ...",
        "livegen: error: --cpu-lanes must be at least 1, got 0",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "{missing}"], "model '{missing}' is not a folder: looked for {missing}"),
        (["--model", "sd-turbo"], "model 'sd-turbo' is not a folder"),  # no owner: not a hub id
        (["--tiny-vae", "{missing}"], "looked for {missing}. .* madebyollin/taesd for SD 1/2"),
        (["--lora", "x={missing}"], "LoRA 'x': no file at {missing}"),
        (["--tls-cert", "{missing}", "--tls-key", "{missing}"], "--tls-cert: no file at"),
    ],
)
def test_a_local_path_that_is_not_there_is_named_before_anything_loads(tmp_path, argv, message):
    missing = tmp_path / "nope"
    argv = [arg.format(missing=missing) for arg in argv]
    config = parse(["--pipeline", "sd-turbo", *argv], {})

    with pytest.raises(MissingFile, match=message.format(missing=missing)):
        config.check_files()


def test_hub_ids_and_folders_that_are_there_pass_the_file_check(tmp_path):
    (tmp_path / "lora.safetensors").touch()
    argv = ["--model", "stabilityai/sd-turbo", "--tiny-vae", str(tmp_path)]
    config = parse(
        ["--pipeline", "sd-turbo", *argv, "--lora", f"x={tmp_path}/lora.safetensors"], {}
    )

    config.check_files()
