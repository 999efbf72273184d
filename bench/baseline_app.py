"""The control-API baseline: a trivial FastAPI endpoint, served with the gateway's uvicorn options
(`kubehands.api.cli.gateway.run`), so the difference to the gateway is the gateway's own work."""

import argparse

from fastapi import FastAPI

from kubehands.api.cli.gateway import serve


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
    serve("bench.baseline_app:create_app", args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
