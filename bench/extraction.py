"""Index extraction cost per resource type on the Synthea bundles (no timed assertions).

Run: `.venv/bin/python -m bench.extraction` or `.venv/bin/python bench/extraction.py
[BUNDLE_DIR] [--repeat N]`. References are rewritten from `urn:uuid:` to `Type/id` and
meta.lastUpdated is set, as the transaction service does before extraction.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.search import default_registry  # noqa: E402
from fhir_server.search.extract import Extractor  # noqa: E402
from fhir_server.search.params.date import date_range  # noqa: E402
from fhir_server.search.params.string import normalize  # noqa: E402
from fhir_server.search.references import parse_reference  # noqa: E402

CACHES = (date_range, normalize, parse_reference)

DEFAULT_DIR = Path("/work/shared/data/synthea")


def _rewrite(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, targets) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in targets:
            out["reference"] = targets[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, targets) for v in value]
    return value


def load_resources(directory: Path) -> list[dict[str, Any]]:
    """Every resource of every bundle, as stored after a transaction."""
    resources = []
    for path in sorted(directory.glob("*.json")):
        bundle = json.loads(path.read_text())
        entries = bundle.get("entry", [])
        targets = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if "fullUrl" in e and "id" in e.get("resource", {})
        }
        for e in entries:
            resource = _rewrite(e["resource"], targets)
            resource["meta"] = {**resource.get("meta", {}), "versionId": "1",
                                "lastUpdated": "2024-05-01T12:00:00.000Z"}
            resources.append(resource)
    return resources


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 7
    args = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    directory = Path(args[0]) if args else DEFAULT_DIR
    resources = load_resources(directory)
    extractor = Extractor(default_registry())
    t0 = time.perf_counter()
    for r in resources:  # compiles the plan of each type once
        extractor.extract(r)
    warmup = time.perf_counter() - t0

    # times[i][k]: pass k over resource i. Caches are cleared before each pass so that a
    # repeat never finds the values of its own earlier pass (only sharing within a pass counts).
    times: list[list[float]] = [[] for _ in resources]
    for _ in range(repeat):
        for cache in CACHES:
            cache.cache_clear()
        for i, r in enumerate(resources):
            t = time.perf_counter_ns()
            extractor.extract(r)
            times[i].append((time.perf_counter_ns() - t) / 1000)

    by_type: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(resources):
        by_type[r["resourceType"]].append(i)
    print(f"{len(resources)} resources from {directory}, {repeat} passes; "
          f"first pass incl. compiling plans {warmup * 1000:.0f} ms")
    print("per resource: 'best' = fastest of the passes (least disturbed by other load), "
          "'median' = median of all passes")
    print(f"{'type':<26}{'count':>6}{'entries':>8}{'best us':>9}{'median us':>11}{'p95 us':>8}")
    rows = sorted(by_type.items(), key=lambda kv: -len(kv[1]))
    for rtype, idx in rows + [("all", list(range(len(resources))))]:
        best = [min(times[i]) for i in idx]
        flat = sorted(t for i in idx for t in times[i])
        n_entries = statistics.fmean(len(extractor.extract(resources[i])) for i in idx)
        print(f"{rtype:<26}{len(idx):>6}{n_entries:>8.1f}{statistics.fmean(best):>9.1f}"
              f"{statistics.median(flat):>11.1f}{flat[int(len(flat) * 0.95)]:>8.1f}")
    print("fallbacks:", extractor.fallbacks or "none")


if __name__ == "__main__":
    main(sys.argv[1:])
