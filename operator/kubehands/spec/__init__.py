"""The domain the operator and the gateway share: how a /start becomes a Sandbox.

- `settings`: the settings that shape a Sandbox spec (`SpecSettings`; the gateway's `Settings` extends them, the
  operator reads them for its pool check);
- `request`: the /start body (`StartRequest`) and what is read from it beyond its schema;
- `profile`: what an administrator attaches to an API key (`Profile`);
- `objects`: the derivation /start -> Sandbox (and its session-key Secret), as pure builders;
- `urls`: the sandbox URLs of the three routing modes (the env a Sandbox gets names them);
- `pools`: the rule whether a pool template serves a /start; `pool_match`: whether any /start can match one.

Pure: imports `kubehands.crd` only (no kopf, no FastAPI, no API calls; `make lint` checks it).
"""
