"""The asyncio server: the only livegen code that touches sockets and threads.

It wraps the sans-I/O core in :mod:`stream` with the ``websockets`` library,
serves a few HTTP routes on the same port, and runs the pipeline on one
inference thread.
"""
