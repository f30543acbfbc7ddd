"""create_app(settings): wires store, validation, search registry and routes together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .http import bundle_router, fhir_router, install_error_handlers, metadata_router, operability_router
from .logs import RequestIdMiddleware
from .model.validation import Validator
from .search import default_registry
from .services.context import Context
from .services.demo import load_demo_data
from .settings import Settings
from .store.base import Store
from .store.mongo import MongoStore
from .store.sqlite import SqliteStore

log = logging.getLogger("fhir_server")


def open_store(url: str) -> Store:
    """The store a URL names: `sqlite:///path` or a MongoDB connection string."""
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        return MongoStore.from_url(url)
    raise ValueError(f"Unsupported store URL scheme: {url.split(':', 1)[0]}")


def build_context(settings: Settings, store: Store) -> Context:
    """The service-layer Context for `settings` on `store` (the app and the CLI share it)."""
    return Context(
        store=store,
        validator=Validator(use_models=settings.validate_with_models),
        registry=default_registry(),
        base_url=settings.base_url.rstrip("/"),
        default_page_size=settings.default_page_size,
        max_page_size=settings.max_page_size,
    )


@asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[Context]:
    """A Context on the store `settings` names, open for the duration of the block."""
    store = open_store(settings.store_url)
    await store.open()
    try:
        yield build_context(settings, store)
    finally:
        await store.close()


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """The ASGI application for `settings` (read from the environment if omitted), on
    `store` if given (tests), else on the store `settings` names."""
    settings = settings or Settings()
    store = store or open_store(settings.store_url)
    context = build_context(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        if settings.demo_data:
            loaded = await load_demo_data(context)
            if loaded:
                log.info("demo data loaded", extra={"resources": loaded})
        log.info("ready", extra={"base_url": settings.base_url})
        yield
        await store.close()

    app = FastAPI(
        title="fhir-server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.context = context
    install_error_handlers(app)
    app.include_router(operability_router)
    app.include_router(metadata_router, prefix=settings.base_path)
    app.include_router(bundle_router, prefix=settings.base_path)
    app.include_router(fhir_router, prefix=settings.base_path)
    app.add_middleware(RequestIdMiddleware)
    return app
