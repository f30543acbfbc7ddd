"""The HTTP face: routes, content negotiation, paging links, errors -> OperationOutcome."""

from .bundles import router as bundle_router
from .errors import install as install_error_handlers
from .export import router as export_router
from .head import HeadMiddleware
from .metadata import router as metadata_router
from .notifications import router as notifications_router
from .operability import router as operability_router
from .privacy import router as privacy_router
from .routes import router as fhir_router
from .routes import shortcut_router
from .sealing_keys import router as sealing_keys_router
from .subscriptions import router as subscriptions_router

__all__ = ["HeadMiddleware", "bundle_router", "export_router", "fhir_router", "install_error_handlers",
           "metadata_router", "notifications_router", "operability_router",
           "privacy_router", "sealing_keys_router", "shortcut_router", "subscriptions_router"]
