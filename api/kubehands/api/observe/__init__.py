"""What the gateway knows of the cluster: the watch caches every read answers from, the pods' details (events, log
lines), whether an agent server answers (`alive`), and the gateway's Prometheus metrics.

May use `pools` (pure predicates) and the shared modules of `kubehands.api`; never `control` or `router`.
"""
