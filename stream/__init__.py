"""The sans-I/O core of livegen.

Everything here is pure: bytes and values go in, events and bytes come out.
No sockets, no asyncio, no torch. ``server/`` wraps it in I/O; the Python
client reuses it to speak the same protocol.
"""

PROTOCOL_VERSION = 1
