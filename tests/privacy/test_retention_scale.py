"""What keeps the retention run linear in the size of the store (docs/privacy.md, "The
retention run, measured"): each archived record's erasure finds the versions sealed under the
patient's keys through an index, not by reading the whole history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhir_server.store.sqlite.schema import ERASABLE, migrate


def test_the_versions_under_a_patients_keys_are_found_through_an_index(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "fhir.db", isolation_level=None)
    migrate(conn)
    keys = (b"k" * 16, b"j" * 16)
    for query in (  # the two look-ups of store/sqlite/erase.py
            "SELECT r.type, r.id FROM history h CROSS JOIN resource r ON r.pk = h.resource_pk "
            f"WHERE substr(h.body, 2, 16) IN (?, ?) AND h.{ERASABLE} AND r.seq = h.seq",
            f"DELETE FROM history WHERE substr(body, 2, 16) IN (?, ?) AND {ERASABLE} AND NOT EXISTS (SELECT 1 "
            "FROM resource r WHERE r.pk = history.resource_pk AND r.seq = history.seq)"):
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", keys)]
        assert not [step for step in plan if step.startswith("SCAN")], plan
        assert any("history_key" in step for step in plan), plan
