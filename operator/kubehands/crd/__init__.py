"""The shared `Sandbox` model: constants, names, the pydantic model and the generated CRD.

Imports neither kopf nor FastAPI, so the operator and the gateway can both use it.
"""
