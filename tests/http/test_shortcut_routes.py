"""The shortcut routes (http/routes.py), mounted before every other router of the FHIR base,
must never take a request that another route answers differently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fastapi.routing import APIRoute
from starlette.routing import Match, Route

from fhir_server.app import create_app
from fhir_server.http.auth import authenticate
from fhir_server.http import bundle_router, fhir_router, metadata_router, shortcut_router
from fhir_server.http.auth_routes import discovery_off_router, discovery_router
from fhir_server.http.operations import router as operations_router
from fhir_server.settings import Settings
from tests.builders import patient
from tests.conftest import authorized, token
from tests.http.helpers import send

# Values a path parameter of another route may take, including the ones a shortcut would
# wrongly catch if its segments were any text.
_SAMPLES = ["Patient", "metadata", "_history", "_search", "$everything", ".well-known", "123", "a.b"]


def _paths(route: APIRoute) -> list[str]:
    names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
    paths = [route.path]
    for name in names:
        paths = [re.sub(r"{%s(?::\w+)?}" % name, value, p) for p in paths for value in _SAMPLES]
    return paths


def _taken_by_shortcut(method: str, path: str) -> Route | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in shortcut_router.routes:
        assert isinstance(route, Route)
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


@pytest.mark.parametrize("router", [metadata_router, discovery_router, discovery_off_router,
                                    bundle_router, operations_router, fhir_router])
def test_no_other_route_is_shadowed(router) -> None:
    for route in router.routes:
        assert isinstance(route, APIRoute)
        for method in route.methods:
            for path in _paths(route):
                taken = _taken_by_shortcut(method, path)
                if taken is None:
                    continue
                # Caught by a shortcut: only where the generic route list would have chosen
                # the same endpoint for it (the first route of `fhir_router` that matches).
                first = next(r for r in fhir_router.routes
                             if r.matches({"type": "http", "method": method, "path": path,
                                           "root_path": ""})[0] is Match.FULL)
                assert router is fhir_router, (method, path, route.path)
                assert first.endpoint.__name__ == taken.name, (method, path, route.path)


def test_the_single_resource_interactions_take_the_shortcut() -> None:
    for method, path in [("GET", "/Patient/perf-0000001"), ("PUT", "/Patient/a.b-1"),
                         ("DELETE", "/Observation/1"), ("GET", "/Patient"), ("POST", "/Patient")]:
        assert _taken_by_shortcut(method, path) is not None, (method, path)
    for method, path in [("GET", "/Patient/_history"), ("GET", "/metadata"), ("PATCH", "/Patient/1"),
                         ("GET", "/Patient/$everything"), ("POST", "/Patient/_search")]:
        assert _taken_by_shortcut(method, path) is None, (method, path)


def test_the_shortcuts_authenticate_as_the_routes_do() -> None:
    # Each shortcut calls `authenticate` itself: it must stay the routes' only dependency.
    assert [d.dependency for d in fhir_router.dependencies] == [authenticate]
    assert shortcut_router.dependencies == []
    # Plain Starlette routes: FastAPI's request handling (dependency solving, its exit
    # stack) would be done for nothing on every call.
    assert not [r for r in shortcut_router.routes if isinstance(r, APIRoute)]


def test_a_shortcut_request_is_authenticated_and_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        assert send(client, "PUT", "/fhir/Patient/p1", {**patient(), "id": "p1"}).status_code == 201
        assert client.get("/fhir/Patient/p1", headers={"Authorization": "Bearer nonsense"}).status_code == 401
        assert client.get("/fhir/Patient/p1", headers={"Authorization": ""}).status_code == 401
        reader = {"Authorization": f"Bearer {token(client, 'system/Observation.rs')}"}
        assert client.get("/fhir/Patient/p1", headers=reader).status_code == 403  # scope denies
        assert client.get("/fhir/Patient/p1").status_code == 200
        head = client.head("/fhir/Patient/p1")  # RFC 9110 §9.1: HEAD wherever GET is answered
        read = client.get("/fhir/Patient/p1")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["etag"] == read.headers["etag"]
        assert head.headers["content-length"] == read.headers["content-length"]
        assert client.head("/fhir/Patient/p1", headers=reader).status_code == 403
        events = client.get("/fhir/AuditEvent?subtype=read&_count=50").json().get("entry", [])
        assert sum(e["resource"]["outcome"] == "4" for e in events) >= 4  # the refusals, the HEAD too
