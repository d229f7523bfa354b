"""Python client for livegen: one session over one WebSocket (asyncio)."""

from livegen_client.client import LivegenClient, ServerError

__all__ = ["LivegenClient", "ServerError"]
