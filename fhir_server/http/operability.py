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
    """The store answers; 503 with the reason otherwise. `details` says what the store is and
    can do (a MongoDB standalone server cannot run FHIR transactions)."""
    store = request.app.state.context.store
    try:
        await store.check()
    except FhirError as exc:
        reason = exc.issues[0].diagnostics
    except Exception:  # noqa: BLE001 - any store failure means "not ready"; details stay in logs
        reason = "the store does not answer"
    else:
        return JSONResponse({"status": "ready", "details": store.status()})
    return JSONResponse({"status": "unavailable", "store": reason, "details": store.status()}, 503)
