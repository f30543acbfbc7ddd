"""The terminology operations' routes (FHIR R4 terminology-service.html), GET and POST:
`CodeSystem/$lookup`, `CodeSystem/[id]/$validate-code`, `ValueSet/[id]/$expand`,
`ValueSet/[id]/$validate-code`, `ConceptMap/[id]/$translate` (each also at type level); other
methods get 405.
GET takes the parameters from the query string, POST from a Parameters body; both go to the
same service call (services/terminology.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..search import query_pairs
from ..services import terminology
from ..terminology_service import Pair, pairs_of
from .auth import authenticate, context_of
from .errors import not_allowed
from .negotiation import check_acceptable, fhir_response
from .routes import read_payload

router = APIRouter(dependencies=[Depends(authenticate)])


async def _pairs(request: Request) -> list[Pair]:
    if request.method == "POST":
        return pairs_of((await read_payload(request)).checked)
    return list(query_pairs(request.scope["query_string"]))


def _endpoint(resource_type: str, operation: str) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request, id: str | None = None) -> Response:
        check_acceptable(request)
        answer = await terminology.run(context_of(request), resource_type, operation,
                                       await _pairs(request), id)
        return fhir_response(request, answer)
    return endpoint


for _type, _operation in terminology.SIGNATURES:
    # The instance path of a type-level operation too: the service says it is not one.
    for _path in (f"/{_type}/${_operation}", f"/{_type}/{{id}}/${_operation}"):
        router.add_api_route(_path, _endpoint(_type, _operation), methods=["GET", "POST"],
                             name=f"{_type}-{_operation}")
        router.add_api_route(_path, not_allowed, methods=["PUT", "PATCH", "DELETE"])
