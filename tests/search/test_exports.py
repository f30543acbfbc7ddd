"""The public surface of fhir_server.search: other packages import only these names."""

from __future__ import annotations

import fhir_server.search as search

PUBLIC = {
    # registry
    "Registry", "SearchParam", "Component", "ParamType", "default_registry",
    # extraction and index entries
    "extract", "Extractor", "IndexEntry", "StringEntry", "TokenEntry", "ReferenceEntry", "DateEntry",
    "NumberEntry", "QuantityEntry", "UriEntry", "PositionEntry", "CompositeEntry", "DATE_MIN", "DATE_MAX",
    "normalize", "distance_km", "date_range",
    # the Query AST
    "Query", "Clause", "Predicate", "Sort", "Include", "Prefix", "PREFIXES", "Total", "Summary",
    "StringPredicate", "TokenPredicate", "TokenTextPredicate", "OfTypePredicate", "ReferencePredicate",
    "ReferenceIdentifierPredicate", "DatePredicate", "NumberPredicate", "QuantityPredicate", "UriPredicate",
    "NearPredicate", "CompositePredicate", "Missing", "Not", "Chain", "Has",
    # decode, parse, format, match
    "query_pairs", "parse_query", "format_query", "matches", "Resolver", "Unsupported", "MAX_VALUES",
    # compartments
    "patients_of",
    # blind indexes of protected parameters
    "BlindIndex", "Digest", "default_protected", "PROTECTED_CODES",
}  # fmt: skip


def test_exports_are_exactly_the_public_surface() -> None:
    assert set(search.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(search, name) is not None, name
