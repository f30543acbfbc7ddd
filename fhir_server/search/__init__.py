"""Search: the R4 SearchParameter registry, write-time index extraction, the Query AST with
its parser and formatter, and the reference evaluator (FHIR R4 search.html).

Other packages import search only from here.
"""

from .ast import (
    PREFIXES,
    Chain,
    Clause,
    CompositePredicate,
    DatePredicate,
    Has,
    Include,
    Missing,
    NearPredicate,
    Not,
    NumberPredicate,
    OfTypePredicate,
    Predicate,
    Prefix,
    QuantityPredicate,
    Query,
    ReferenceIdentifierPredicate,
    ReferencePredicate,
    Sort,
    StringPredicate,
    Summary,
    TokenPredicate,
    TokenTextPredicate,
    Total,
    UriPredicate,
)
from .entries import (
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from .blind import BlindIndex, Digest, default_protected
from .compartments import patients_of
from .extract import Extractor, extract
from .match import Resolver, Unsupported, matches
from .params.date import DATE_MAX, DATE_MIN
from .params.special import distance_km
from .params.string import normalize
from .parse import format_query, parse_query, query_pairs
from .registry import Component, ParamType, Registry, SearchParam, default_registry

__all__ = [
    "patients_of",
    "DATE_MAX",
    "DATE_MIN",
    "PREFIXES",
    "BlindIndex",
    "Chain",
    "Clause",
    "Component",
    "CompositeEntry",
    "CompositePredicate",
    "DateEntry",
    "Digest",
    "DatePredicate",
    "Extractor",
    "Has",
    "Include",
    "IndexEntry",
    "Missing",
    "NearPredicate",
    "Not",
    "NumberEntry",
    "NumberPredicate",
    "OfTypePredicate",
    "ParamType",
    "PositionEntry",
    "Predicate",
    "Prefix",
    "QuantityEntry",
    "QuantityPredicate",
    "Query",
    "ReferenceEntry",
    "ReferenceIdentifierPredicate",
    "ReferencePredicate",
    "Registry",
    "Resolver",
    "SearchParam",
    "Sort",
    "StringEntry",
    "StringPredicate",
    "Summary",
    "TokenEntry",
    "TokenPredicate",
    "TokenTextPredicate",
    "Total",
    "Unsupported",
    "UriEntry",
    "UriPredicate",
    "default_protected",
    "default_registry",
    "distance_km",
    "extract",
    "format_query",
    "matches",
    "normalize",
    "parse_query",
    "query_pairs",
    "patients_of",
]
