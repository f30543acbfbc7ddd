"""Patient/[id]/$erase (R6 calls it `$purge`): the right to erasure (GDPR art. 17).

Removes the patient's compartment from the store, every version and index entry of every
resource in it (store/erasure.py says how deleted resources are found), destroys the
patient's data key so that every other copy of their ciphertext (WAL, audit details, backups)
can no longer be read, and records the erasure in the erasure ledger kept with the key ring
(crypto/ledger.py), which `fhir-server restore` replays. AuditEvents are not erased: the hash
chain covers them, and their personal details shred with the key. docs/backup-and-erasure.md.
"""

from __future__ import annotations

from ..access import compartment_clause
from ..search import Query, Registry

# Never erased (see the module docstring).
KEPT_TYPES = frozenset({"AuditEvent"})


def compartment(registry: Registry, patient_id: str) -> list[Query]:
    """One query per type of Patient/`patient_id`'s compartment (compartmentdefinition-patient),
    the Patient itself included, the Patients its `link` names and AuditEvents not."""
    queries = []
    for resource_type in sorted(registry.resource_types):
        if resource_type in KEPT_TYPES:
            continue
        clause = compartment_clause(registry, resource_type, patient_id, links=False)
        if clause is not None:
            queries.append(Query(resource_type, (clause,)))
    return queries
