"""kubehands.api: the FastAPI gateway (OpenHands runtime API, API keys, sandbox router).

Importing this package must not import kopf.
"""
