"""The runtime API's HTTP surface: one APIRouter per area, the caller's API key (`deps`), strict JSON bodies.

Routes work on the wired gateway (`kubehands.api.gateway`): they may use every part of it, and nothing uses them
but `main`.
"""
