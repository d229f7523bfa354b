"""Runs fal's published Python client, unmodified, against livegen.

Driven by tests/fal/test_python_client.py in a fresh process, because the client
reads ``FAL_RUN_HOST`` once, when it is imported. argv[1] is a JSON plan:
``{"app": "fal-ai/...", "inputs": [{...}, ...], "max_buffering": N (optional)}``;
an input's ``{"$bytes": PATH}`` or ``{"$data_uri": PATH}`` stands for the image in
that file. Each input is sent, then its answer read: a result, or the error the
client raises. Every event is printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fal_client
from fal_client.client import RealtimeError
from websockets.exceptions import InvalidStatus


def materialize(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "$bytes" in value:
        return Path(value["$bytes"]).read_bytes()
    if "$data_uri" in value:
        return fal_client.encode_file(value["$data_uri"])
    return {key: materialize(item) for key, item in value.items()}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    image = result["images"][0]
    return {
        "content_is_bytes": isinstance(image["content"], bytes),
        "content_head": image["content"][:3].hex(),
        "content_length": len(image["content"]),
        "url_head": image.get("url", "")[:23] or None,
        **{key: image[key] for key in ("width", "height", "content_type")},
        **{key: result.get(key) for key in ("seed", "request_id", "prompt", "has_nsfw_concepts")},
        "timings": sorted(result["timings"]),
    }


def main() -> None:
    plan = json.loads(sys.argv[1])
    try:
        with fal_client.realtime(
            plan["app"], use_jwt=False, max_buffering=plan.get("max_buffering")
        ) as connection:
            for arguments in plan["inputs"]:
                connection.send(materialize(arguments))
                try:
                    event = {"event": "result", **summary(connection.recv())}
                except RealtimeError as error:
                    event = {"event": "error", "error": error.error, "reason": error.reason}
                    event["request_id"] = error.payload.get("request_id")
                print(json.dumps(event), flush=True)
    except InvalidStatus as refusal:
        status = refusal.response.status_code
        print(
            json.dumps(
                {"event": "refused", "status": status, "body": refusal.response.body.decode()}
            )
        )


if __name__ == "__main__":
    main()
