"""Warm pools, the gateway's part (docs/design/0010-warm-pools.md, docs/gateway.md "Warm pools"): which members a
/start may claim and what the claim writes (`claims`), what the member's dormant server is told (`init`), the claim
itself (`warm_start`) and the recovery of claims whose gateway died (`recovery`). Which templates serve a /start is
`kubehands.spec.pools`.

May use `observe` and the shared modules of `kubehands.api`; never `control` or `router`.
"""
