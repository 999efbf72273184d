"""The gateway's subcommands of `kubehands` (`kubehands.cli` imports each lazily): `gateway` (serve it with uvicorn),
`keys` (API keys) and `sandboxes` (an administrator's view). On top: may use everything in `kubehands.api`.
"""
