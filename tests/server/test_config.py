"""``livegen serve`` configuration: flags over ``LIVEGEN_*`` variables over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser
from server.config import ServerConfig


def parse(argv: list[str], environ: dict[str, str]) -> ServerConfig:
    args = vars(build_parser(environ).parse_args(["serve", *argv]))
    args.pop("command")
    return ServerConfig(**args)


def test_defaults_bind_to_loopback_with_the_passthrough_pipeline():
    config = parse([], {})

    assert (config.host, config.port, config.pipeline) == ("127.0.0.1", 8000, "passthrough")
    assert config.model is None and isinstance(config.web_root, Path)


def test_environment_variables_set_options_and_flags_win_over_them():
    environ = {"LIVEGEN_PORT": "9000", "LIVEGEN_SESSION_GRACE_S": "2.5", "LIVEGEN_MODEL": "m"}
    config = parse(["--port", "9100"], environ)

    assert config.port == 9100
    assert config.session_grace_s == 2.5
    assert config.model == "m"


def test_a_bad_environment_value_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        parse([], {"LIVEGEN_MAX_SESSIONS": "many"})

    assert exited.value.code == 2
    assert "--max-sessions: invalid int value: 'many'" in capsys.readouterr().err


def test_limits_come_from_the_configuration():
    config = parse(["--max-image-pixels", "1000", "--messages-per-s", "5"], {})

    assert config.limits.max_image_pixels == 1000
    assert config.limits.messages_per_s == 5.0
    assert parse([], {"LIVEGEN_MESSAGE_BURST": "7"}).limits.message_burst == 7


def test_pipeline_options_come_from_the_configuration():
    options = parse(["--cpu-lanes", "1", "--prepack-weights=false"], {}).pipeline_options

    assert (options.cpu_lanes, options.prepack_weights) == (1, False)
    assert parse([], {"LIVEGEN_CPU_LANES": "3"}).pipeline_options.cpu_lanes == 3


def test_fewer_than_one_cpu_lane_is_refused():
    with pytest.raises(ValueError, match="--cpu-lanes must be at least 1, got 0"):
        parse(["--cpu-lanes", "0"], {})
