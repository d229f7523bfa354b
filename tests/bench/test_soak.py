"""bench/soak.py still runs end to end: a few seconds of the mixed soak, transport only.

The numbers of so short a run mean nothing; what is checked is that every kind
of client ran, nothing went wrong that the soak did not provoke, and the JSON
holds what bench/README.md describes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_runs_every_client_and_reports_flatness(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--passthrough",
            "--minutes",
            "0.1",
            "--sample-s",
            "1",
            "--grace-s",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    soak = json.loads(out.read_text())["soak"]

    assert soak["errors"]["unexpected_by_clients"] == {}
    assert soak["errors"]["server_sent_unexpected"] == {}
    assert soak["errors"]["server_log_errors"]["count"] == 0
    # The soak provokes these on purpose: a param the model refuses, an ended session resumed.
    assert set(soak["errors"]["expected_by_clients"]) <= {"invalid_params", "session_not_found"}
    assert {"websocket", "fal", "webrtc_first_frame"} <= set(soak["round_trip_ms"])
    for kind in ("websocket", "fal"):
        assert soak["round_trip_ms"][kind]["count"] > 0
        assert 0 < soak["round_trip_ms"][kind]["p50"] <= soak["round_trip_ms"][kind]["p99"]
    assert set(soak["flat"]) == {"rss_mib", "threads", "fds", "tasks"}
    assert all(verdict["flat"] is True for verdict in soak["flat"].values())
    assert len(soak["samples"]) >= 4
    assert set(soak["samples"][0]) == {"t_s", "rss_mib", "threads", "fds", "tasks"}
    # Once every client has gone and the grace period has passed, the loop is idle.
    assert soak["idle_after"]["tasks"] < soak["flat"]["tasks"]["first_half_median"]
