"""Command line: `fhir-server serve`, and the administrative commands as they arrive."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import uvicorn

from .logs import configure
from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    # Worker processes build their own app from the environment, so flags travel through it.
    overrides = {
        "FHIR_SERVER_HOST": args.host,
        "FHIR_SERVER_PORT": None if args.port is None else str(args.port),
        "FHIR_SERVER_WORKERS": None if args.workers is None else str(args.workers),
        "FHIR_SERVER_DEMO_DATA": "true" if args.demo else None,
    }
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings()
    configure(settings.log_level)
    uvicorn.run(
        "fhir_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `fhir-server`."""
    root = argparse.ArgumentParser(prog="fhir-server", description="FHIR R4 server")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="interface to listen on (FHIR_SERVER_HOST)")
    serve.add_argument("--port", type=int, help="port (FHIR_SERVER_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (FHIR_SERVER_WORKERS)")
    serve.add_argument("--demo", action="store_true",
                       help="load the bundled demo data set when the store is empty")
    serve.set_defaults(run=_serve)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fhir-server` console script."""
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
