"""Per-type search parameter logic: indexing, value parsing and matching (search.html)."""
