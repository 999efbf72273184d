"""The control-API baseline: a trivial FastAPI endpoint, served with the gateway's uvicorn options
(`kubehands.api.cli.run`), so the difference to the gateway is the gateway's own work."""

import argparse

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="bench baseline")

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    import uvicorn

    # the same call as `kubehands gateway` (kubehands/api/cli.py), only the app differs
    uvicorn.run(
        "bench.baseline_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
