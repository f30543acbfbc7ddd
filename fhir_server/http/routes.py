"""The FHIR REST routes (FHIR R4 http.html): parse the request, call one service, render."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from ..model import jsonbody
from ..model.errors import Kind, fail
from ..model.outcome import information
from ..model.types import ID_PATTERN
from ..search import query_pairs
from ..services import crud, history, search
from ..services.context import Context, Payload
from ..store.base import Result
from .auth import authenticate, context_of
from .errors import WRITES, not_allowed
from .headers import if_match, prefer, version_headers
from .negotiation import check_acceptable, empty_response, fhir_response, read_body

router = APIRouter(dependencies=[Depends(authenticate)])


def _ctx(request: Request) -> Context:
    return context_of(request)


def _base_url(request: Request) -> str:
    return request.app.state.settings.base_url.rstrip("/")  # type: ignore[no-any-return]


def _query(request: Request) -> list[tuple[str, str]]:
    pairs = query_pairs(request.scope["query_string"])  # strict: Starlette's hides bad UTF-8
    return [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]


def _criteria(request: Request) -> str:
    return urlencode(_query(request))


async def read_payload(request: Request) -> Payload:
    """The request body as a resource (INVALID unless a JSON object)."""
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    checked, exact, depth = jsonbody.parse_counted(body)
    if not isinstance(checked, dict):
        raise fail(Kind.INVALID, "structure", "The body must be a JSON object (a FHIR resource).")
    return Payload(checked, exact, depth)


async def _patch_document(request: Request) -> Any:
    body = await read_body(request, request.app.state.settings.max_body_bytes, patch=True)
    return jsonbody.parse_decimal(body)


def _write_response(request: Request, result: Result, *, message: str) -> Response:
    """Render a create/update/patch result as the spec and `Prefer: return` ask."""
    version = result.version
    if version is None or version.body is None:
        raise AssertionError("write without a stored version")
    location = f"{_base_url(request)}/{version.resource_type}/{version.id}/_history/{version.version}"
    status = 201 if result.outcome == "created" else 200
    headers = version_headers(version, location if status == 201 or result.outcome == "updated" else None)
    wanted = prefer(request, "return")
    if wanted == "minimal":
        return empty_response(status, headers)
    if wanted == "operationoutcome":
        return fhir_response(request, information(message), status=status, headers=headers)
    return fhir_response(request, version.body, status=status, headers=headers)


def _delete_response(request: Request, result: Result) -> Response:
    headers = version_headers(result.version) if result.version else {}
    headers.pop("Last-Modified", None)
    wanted = prefer(request, "return")
    if wanted in ("operationoutcome", "representation"):
        count = len(result.versions)
        message = f"Deleted {count} resource(s)." if count else "Nothing to delete."
        return fhir_response(request, information(message), status=200, headers=headers)
    return empty_response(204, headers)


def _strict(request: Request) -> bool:
    return prefer(request, "handling") == "strict"


async def _form_params(request: Request) -> list[tuple[str, str]]:
    """The parameters of a POST _search: form body plus query string (http.html#search)."""
    body = await read_body(request, request.app.state.settings.max_body_bytes, form=True)
    return _query(request) + query_pairs(body)


# Methods a known path does not take: 405 with Allow (http.html), not a type named "_history".
for _path, _methods in [
    ("/_history", WRITES),
    ("/_search", ["GET", *WRITES[1:]]),
    ("/{resource_type}/_history", WRITES),
    ("/{resource_type}/_search", ["GET", *WRITES[1:]]),
]:
    router.add_api_route(_path, not_allowed, methods=_methods)


# -- search ----------------------------------------------------------------------------


@router.get("")
async def search_system(request: Request) -> Response:
    check_acceptable(request)
    bundle = await search.search(_ctx(request), None, _query(request), strict=_strict(request))
    return fhir_response(request, bundle)


@router.post("/_search")
async def search_system_post(request: Request) -> Response:
    check_acceptable(request)
    params = await _form_params(request)
    bundle = await search.search(_ctx(request), None, params, strict=_strict(request), posted=True)
    return fhir_response(request, bundle)


@router.get("/_history")
async def history_system(request: Request) -> Response:
    check_acceptable(request)
    bundle = await history.history(
        _ctx(request), None, None, _query(request),
        base_url=_base_url(request), self_url=f"{_base_url(request)}/_history",
    )
    return fhir_response(request, bundle)


@router.get("/{resource_type}")
async def search_type(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    bundle = await search.search(_ctx(request), resource_type, _query(request), strict=_strict(request))
    return fhir_response(request, bundle)


@router.post("/{resource_type}/_search")
async def search_type_post(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    params = await _form_params(request)
    bundle = await search.search(_ctx(request), resource_type, params, strict=_strict(request), posted=True)
    return fhir_response(request, bundle)


# -- type level ------------------------------------------------------------------------


@router.post("/{resource_type}")
async def create(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    payload = await read_payload(request)
    result = await crud.create(
        _ctx(request), resource_type, payload, if_none_exist=request.headers.get("if-none-exist")
    )
    if result.outcome == "matched":
        return _write_response(request, result, message="An existing resource matches; nothing created.")
    return _write_response(request, result, message="Created.")


@router.put("/{resource_type}")
async def conditional_update(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    payload = await read_payload(request)
    result = await crud.conditional_update(
        _ctx(request), resource_type, _criteria(request), payload, if_match=if_match(request)
    )
    return _write_response(request, result, message="Stored.")


@router.patch("/{resource_type}")
async def conditional_patch(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    document = await _patch_document(request)
    result = await crud.conditional_patch(
        _ctx(request), resource_type, _criteria(request), document, if_match=if_match(request)
    )
    return _write_response(request, result, message="Patched.")


@router.delete("/{resource_type}")
async def conditional_delete(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    result = await crud.conditional_delete(
        _ctx(request),
        resource_type,
        _criteria(request),
        multiple=request.app.state.settings.conditional_delete_multiple,
    )
    return _delete_response(request, result)


@router.get("/{resource_type}/_history")
async def history_type(request: Request, resource_type: str) -> Response:
    check_acceptable(request)
    bundle = await history.history(
        _ctx(request), resource_type, None, _query(request),
        base_url=_base_url(request), self_url=f"{_base_url(request)}/{resource_type}/_history",
    )
    return fhir_response(request, bundle)


# -- instance level --------------------------------------------------------------------


@router.get("/{resource_type}/{id}")
async def read(request: Request, resource_type: str, id: str) -> Response:
    check_acceptable(request)
    version = await crud.read(_ctx(request), resource_type, id)
    assert version.body is not None
    return fhir_response(request, version.body, headers=version_headers(version))


@router.put("/{resource_type}/{id}")
async def update(request: Request, resource_type: str, id: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    crud.check_id(id)
    payload = await read_payload(request)
    result = await crud.update(_ctx(request), resource_type, id, payload, if_match=if_match(request))
    return _write_response(request, result, message="Stored.")


@router.patch("/{resource_type}/{id}")
async def patch(request: Request, resource_type: str, id: str) -> Response:
    check_acceptable(request)
    crud.check_type(resource_type)
    crud.check_id(id)
    document = await _patch_document(request)
    result = await crud.patch(_ctx(request), resource_type, id, document, if_match=if_match(request))
    return _write_response(request, result, message="Patched.")


@router.delete("/{resource_type}/{id}")
async def delete(request: Request, resource_type: str, id: str) -> Response:
    check_acceptable(request)
    result = await crud.delete(_ctx(request), resource_type, id, if_match=if_match(request))
    return _delete_response(request, result)


@router.get("/{resource_type}/{id}/_history")
async def history_instance(request: Request, resource_type: str, id: str) -> Response:
    check_acceptable(request)
    base = _base_url(request)
    bundle = await history.history(
        _ctx(request), resource_type, id, _query(request),
        base_url=base, self_url=f"{base}/{resource_type}/{id}/_history",
    )
    return fhir_response(request, bundle)


@router.get("/{compartment}/{id}/{resource_type}")
async def search_compartment(request: Request, compartment: str, id: str, resource_type: str) -> Response:
    check_acceptable(request)
    if compartment != "Patient":
        crud.check_type(compartment)
        raise fail(Kind.NOT_SUPPORTED, "not-supported",
                   "Only the Patient compartment can be searched (compartmentdefinition-patient).")
    bundle = await search.search(_ctx(request), resource_type, _query(request),
                                 strict=_strict(request), compartment=id)
    return fhir_response(request, bundle)


@router.get("/{resource_type}/{id}/_history/{version_id}")
async def vread(request: Request, resource_type: str, id: str, version_id: str) -> Response:
    check_acceptable(request)
    version = await crud.vread(_ctx(request), resource_type, id, version_id)
    assert version.body is not None
    return fhir_response(request, version.body, headers=version_headers(version))


# -- shortcut --------------------------------------------------------------------------


class _TypeName(Convertor[str]):
    """A path segment shaped like a resource type: R4's type names start upper-case."""

    regex = "[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _Id(_TypeName):
    """A path segment shaped like a logical id (datatypes.html#id)."""

    regex = ID_PATTERN.pattern


register_url_convertor("fhir_type", _TypeName())
register_url_convertor("fhir_id", _Id())

# The single-resource routes once more, on paths no other route of the FHIR base can match:
# mounted first, they are found after a handful of route checks instead of the ~40 that the
# routers mounted before this one cost every request (~30 % of a read's event-loop time,
# issue 15).
# A path they do not match (PATCH, `_history`, `$op`, a malformed id) goes on to the routers
# above, which answer it as before.
# Their endpoints take the request alone and authenticate it themselves: FastAPI's solving
# of the router's dependency and of the typed path parameters was a fifth of a read's time
# on the event loop. `authenticate` is the only dependency of `router` (the test checks it).
# They are plain Starlette routes: FastAPI's request handling around an endpoint that takes
# the request alone (an empty dependency solve, an exit stack) cost ~8 % of a read.
shortcut_router = APIRouter()


def _shortcut(endpoint: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def shortcut(request: Request) -> Response:
        await authenticate(request)
        return await endpoint(request, **request.path_params)

    return shortcut


for _path, _endpoint, _method in [
    ("/{resource_type:fhir_type}", search_type, "GET"),
    ("/{resource_type:fhir_type}", create, "POST"),
    ("/{resource_type:fhir_type}/{id:fhir_id}", read, "GET"),
    ("/{resource_type:fhir_type}/{id:fhir_id}", update, "PUT"),
    ("/{resource_type:fhir_type}/{id:fhir_id}", delete, "DELETE"),
]:
    shortcut_router.add_route(_path, _shortcut(_endpoint), methods=[_method], name=_endpoint.__name__,
                              include_in_schema=False)
