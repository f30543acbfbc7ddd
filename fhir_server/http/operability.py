"""Liveness and readiness probes, outside the FHIR base path."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..model.errors import FhirError

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The store answers; 503 with the reason otherwise."""
    try:
        await request.app.state.context.store.check()
    except FhirError as exc:
        return JSONResponse({"status": "unavailable", "store": exc.issues[0].diagnostics}, 503)
    except Exception:  # noqa: BLE001 - any store failure means "not ready"; details stay in logs
        return JSONResponse({"status": "unavailable", "store": "the store does not answer"}, 503)
    return JSONResponse({"status": "ready"})
