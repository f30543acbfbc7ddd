"""Bulk Data export jobs outside a request: the worker that runs them in the server, and the
export of an organisation's whole data to a directory (docs/export.md)."""

from .organisation import CHECKSUMS, MANIFEST, Written, export_organization
from .worker import ExportWorker

__all__ = ["CHECKSUMS", "MANIFEST", "ExportWorker", "Written", "export_organization"]
