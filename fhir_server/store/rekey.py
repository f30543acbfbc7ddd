"""Data-key rotation of one scope (a patient compartment, or a type outside compartments): the
scope gets a new key for new writes, every stored version its older keys sealed is sealed
again under it, in batches, while the server serves (readers still open the older keys meanwhile);
then the older keys are retired (kept for older backups until past the retention).

Resumable: a run that stops leaves the scope with a current key and older ones; the next run
goes on with those (no second new key) and rewrites only what older keys still seal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from ..crypto import RECHECK_SECONDS, DataKeys, EnvelopeCodec
from .bodies import BodyRewriting

BATCH = 500


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a rotation did: the new key, versions sealed again, older keys retired."""

    key_id: bytes
    resealed: int
    retired: int


async def rotate_data_key(keys: DataKeys, stores: Sequence[BodyRewriting], scope: str,
                          batch: int = BATCH, settle: float = 2 * RECHECK_SECONDS) -> Rotation:
    """Rotate the data key of `scope` in every store of `stores` (clinical and audit);
    `settle`: seconds to wait until every process seals with the new key."""
    held = keys.keys_of(scope)
    if len(held) > 1:  # an earlier run stopped half way: finish it
        current = held[0]
    else:
        current = keys.rotate(scope)
        # Every process forgets the scope's older key within RECHECK_SECONDS: after that no
        # new version is sealed with it, so a pass that rewrites nothing is the last.
        await asyncio.sleep(settle)
    stale = set(held) - {current}
    codec = EnvelopeCodec(keys)
    rewrite = partial(codec.reseal, scope, stale)
    resealed = 0
    while True:
        this_pass = 0
        for store in stores:
            cursor = None
            while True:
                count, cursor = await store.rewrite_bodies(rewrite, cursor, batch)
                this_pass += count
                if cursor is None:
                    break
        resealed += this_pass
        if this_pass == 0:
            break
    return Rotation(current, resealed, keys.retire(scope, keep=current))
