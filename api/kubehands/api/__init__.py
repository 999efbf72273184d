"""kubehands.api: the FastAPI gateway (OpenHands runtime API, API keys, sandbox router), laid out by job.

- `routes`: the runtime API's HTTP surface (one APIRouter per area, the caller's key, strict JSON bodies);
- `control`: what the runtime API does (the `SandboxService` and its API calls, the /start decision, images);
- `router`: the data plane (sandbox traffic proxied to pods, wake on request, activity);
- `pools`: warm-pool claims (what a claim writes, the member's init, recovery of lost claims);
- `observe`: what the gateway knows of the cluster (watch caches, pod details, readiness, metrics);
- `cli`: `kubehands gateway | keys | sandboxes`;
- beside them the parts every job shares: `settings`, `errors`, `keys` (API keys), `runtime` and `schemas` (what
  clients see of a sandbox), `limits` (the running limit), `ports` (port mode's runtime ids), `middleware`
  (request limits and metrics); `gateway` wires the parts, `main` builds the app.

Importing this package must not import kopf. The data plane never imports the control API, and `pools` and
`observe` import neither (`make lint` checks it: pyproject.toml [tool.importlinter]).
"""
