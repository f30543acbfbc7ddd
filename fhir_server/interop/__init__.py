"""Ingestion adapters: the bulk loader (`fhir-server load`), docs/ingestion.md."""

from .loader import Failure, Loader, LoadOptions, LoadReport, load, progress_stream

__all__ = ["Failure", "LoadOptions", "LoadReport", "Loader", "load", "progress_stream"]
