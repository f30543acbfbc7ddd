"""An erased patient taken out of the day's figures (docs/matching.md, "Erasure and the day's
figures"), so that each study's next call is served from its snapshot, rounded again,
instead of reading every counted record again (16–19 s of CPU a study at 100,000 patients).

`prepared` runs before the store's erasure, while the patient's record is still there; what
it returns is applied right after it (services/erase.py `_swept`). It keeps the daily pass's
snapshots (figures_pass.py) only when it can take the patient out exactly:

- the pass's basis (figures_basis.py) is of today, complete, and holds under the erasure mark
  read now;
- the patient was not counted by the pass (no member of theirs), or the record read now is
  the very one the pass judged (the same versions) and the catalogue too (the same Groups,
  the same recruiting sites): then the patient's cell in each study is judged again as the
  pass judged it (inverse_counts.Cells).

Applied, in one unit of work, on condition that none of the records read has changed since
(compare-and-set): the basis without the patient (population size and digest) under a new
erasure mark, their member removed from its shard, each study in which they were evaluated
with their share taken out of their cell (a cell left empty is removed, with the digest
that was theirs). The new mark makes every other snapshot, a call's, unservable: the next
call computes it. Whenever this cannot be done (None, or the unit refused), the erasure
drops every snapshot as before (services/erase.py `forget_figures`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson

from .. import clock
from ..model.errors import FhirError, Kind
from ..model.ids import new_id
from ..services import study_access, subscriptions
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Outbox, Store
from . import figures_basis, figures_pass, inverse_counts, match_catalogue
from .eligibility import pinned, read_record
from .match import home

Apply = Callable[[], Awaitable[bool]]  # True: applied; False: refused, nothing changed


async def prepared(ctx: Context, patient: str) -> Apply | None:
    """What takes Patient/`patient` out of the day's figures once the store has erased them
    (module docstring); None when they cannot be taken out exactly. Reads only."""
    store = ctx.store
    mark = await subscriptions.one(store, study_access.FIGURES_ERASED)
    body = await subscriptions.one(store, study_access.FIGURES_BASIS)
    basis = figures_basis.loaded(body)
    today = clock.now().date()
    if basis is None or (basis.day, basis.complete, basis.mark) != (
            today.isoformat(), True, figures_basis.mark_of(mark)) or ctx.pseudonym_key is None:
        return None
    key = ctx.pseudonym_key
    token = figures_basis.token(key, patient)
    name = figures_basis.shard(token)
    shard = await subscriptions.one(store, name)
    entries: dict[str, Any] = orjson.loads(shard) if shard is not None else {"basis": basis.id, "members": {}}
    if entries["basis"] != basis.id:
        return None
    members: dict[str, str] = entries["members"]
    again = new_id()
    expect: list[tuple[str, bytes | None]] = [(study_access.FIGURES_ERASED, mark),
                                              (study_access.FIGURES_BASIS, body), (name, shard)]
    put: list[tuple[str, bytes]] = []
    if token in members:
        changed = await _changed(ctx, patient, members.pop(token), basis, key)
        if changed is None:
            return None
        expect += [(n, before) for n, before, _ in changed]
        put += [(n, after) for n, _, after in changed]
        share = inverse_counts.member_digest(key, patient)
        basis = replace(basis, size=basis.size - 1, digest=(basis.digest - share) % inverse_counts.MODULUS)
        put.append((name, orjson.dumps({"basis": basis.id, "members": members})))
    put += [(study_access.FIGURES_BASIS, figures_basis.dumped(replace(basis, mark=again))),
            (study_access.FIGURES_ERASED, again.encode())]
    return lambda: _applied(store, put, expect)


async def _changed(ctx: Context, patient: str, fingerprint: str, basis: figures_basis.Basis,
                   key: bytes) -> list[tuple[str, bytes, bytes]] | None:
    """The snapshots (record name, body held, new body) in which `patient`, a member of `basis`
    whose record the pass judged had `fingerprint`, was evaluated, with them taken out; None
    if their record or the catalogue is no longer the one the pass judged."""
    server = as_server(ctx, "figures")
    records = await figures_pass.records(server, [patient])  # as the pass read it
    today = clock.now().date()
    catalogue = await match_catalogue.load(server)
    if figures_basis.record_fingerprint(records.get(patient, ())) != fingerprint or \
            figures_basis.catalogue_fingerprint(catalogue, today) != basis.catalogue:
        return None
    found = read_record([(pinned(r), r) for r in records[patient]], today)
    kept = catalogue.index.kept(found)  # the pass's index: over every trial of the catalogue
    share = inverse_counts.member_digest(key, patient)
    changed: list[tuple[str, bytes, bytes]] = []
    for trial, cell in zip(kept, inverse_counts.Cells(catalogue, today).each(kept, found, home(found)), strict=True):
        name = f"{study_access.FIGURES_PREFIX}{trial.study}"
        held = await subscriptions.one(ctx.store, name)
        stored = inverse_counts.loaded(held) if held is not None else None
        if held is None or stored is None or stored.basis != basis.id:
            continue  # a call's (made unservable by the new mark), or none
        label = inverse_counts.label(trial, cell)
        size, digest = stored.tally.get(label, (0, 0))
        if size < 1:
            return None  # not where the pass counted them: no exact answer
        tally = {**stored.tally, label: (size - 1, (digest - share) % inverse_counts.MODULUS)}
        if size == 1:
            del tally[label]
        changed.append((name, held, inverse_counts.dumped(replace(stored, tally=tally))))
    return changed


async def _applied(store: Store, put: list[tuple[str, bytes]], expect: list[tuple[str, bytes | None]]) -> bool:
    try:
        await store.commit([Outbox(put=tuple(put), expect=tuple(expect))])
    except FhirError as error:
        if error.kind is not Kind.PRECONDITION_FAILED:
            raise
        return False
    return True
