"""The data plane: requests for a sandbox's URLs proxied to its pod (HTTP and WebSocket), a paused sandbox woken by
its own clients (`wake`), and their activity recorded for the idle culler.

May use `observe` and the shared modules of `kubehands.api`; never the control API (`control`).
"""
