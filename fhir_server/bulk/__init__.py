"""Bulk Data export jobs outside a request: the worker that runs them in the server, and the
export of an organisation's whole data to a directory (docs/export.md)."""

from .worker import ExportWorker

__all__ = ["ExportWorker"]
