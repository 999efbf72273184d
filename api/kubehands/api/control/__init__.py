"""What the runtime API does (docs/runtime-api.md): the `SandboxService` that makes the API calls, the /start
decision (`start`), the image catalog. Its HTTP surface is `kubehands.api.routes`.

May use `pools`, `observe` and the shared modules of `kubehands.api`; never the data plane (`router`).
"""
