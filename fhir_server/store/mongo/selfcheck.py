"""What the MongoDB store checks about its deployment at start and in /readyz.

`hello` (replica set, mongos or standalone; the largest document), the cluster's default read
and write concern (logged: the store sets its own on the database and on every transaction),
the transaction lifetime, the indexes of each collection against layout.py and, on a sharded
cluster, each collection's shard key. What would break the store's guarantees is a problem;
the server refuses to serve while there is one, unless told to accept it (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel
from pymongo.errors import OperationFailure

from . import layout

DEFAULT_MAX_DOCUMENT_SIZE = 16 * 1024 * 1024
DEFAULT_TRANSACTION_LIFETIME = 60  # seconds, MongoDB's transactionLifetimeLimitSeconds


@dataclass
class Deployment:
    """What the self-check learnt, and the problems it found."""

    topology: str = "unknown"
    transactions: bool = False
    max_document_size: int = DEFAULT_MAX_DOCUMENT_SIZE
    transaction_lifetime: int = DEFAULT_TRANSACTION_LIFETIME
    default_concerns: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not refused

    def report(self) -> dict[str, Any]:
        """For /readyz: what the deployment is, and what is wrong with it."""
        report: dict[str, Any] = {"topology": self.topology,
                                  "transaction_lifetime_seconds": self.transaction_lifetime}
        if self.problems:
            report["problems"] = list(self.problems)
        if self.notes:
            report["notes"] = list(self.notes)
        return report


# Index options that change what an index does (a TTL, uniqueness); the name does not.
_INDEX_OPTIONS = ("unique", "sparse", "expireAfterSeconds")


def _signature(index: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two indexes the same index: the key pattern, in order, and the options."""
    key = tuple((field, int(kind) if isinstance(kind, float) else kind)
                for field, kind in index["key"].items())
    return key, tuple((option, index.get(option)) for option in _INDEX_OPTIONS)


async def missing_indexes(collection: Any, models: Sequence[IndexModel]) -> list[IndexModel]:
    """The indexes of `models` the collection lacks, compared by key pattern and options: one
    built under another name (`shard_1__id_1` by `shardCollection`) is the same index."""
    have = {_signature(doc) async for doc in await collection.list_indexes()}
    return [model for model in models if _signature(model.document) not in have]


async def inspect(client: Any, db: Any, *, attempt_seconds: float) -> Deployment:
    """Ask the deployment what it is and compare it with what the store needs."""
    found = Deployment()
    sharded = await _topology(client, found)
    try:
        concerns = await client.admin.command("getDefaultRWConcern")
        found.default_concerns = {k: concerns.get(k) for k in
                                  ("defaultReadConcern", "defaultWriteConcern")}
    except OperationFailure:
        found.default_concerns = {"note": "getDefaultRWConcern not available"}
    if not sharded:  # a mongod parameter; mongos does not hold it
        try:
            answer = await client.admin.command("getParameter", 1,
                                                transactionLifetimeLimitSeconds=1)
            found.transaction_lifetime = int(answer["transactionLifetimeLimitSeconds"])
        except OperationFailure as exc:
            found.notes.append(f"transaction lifetime not read ({exc.code}), "
                               f"{DEFAULT_TRANSACTION_LIFETIME} s assumed")
    else:
        found.notes.append(f"transaction lifetime not read: mongos does not hold it, "
                           f"{DEFAULT_TRANSACTION_LIFETIME} s assumed; check "
                           "transactionLifetimeLimitSeconds on each shard (docs/storage.md)")
    if found.transactions and found.transaction_lifetime < 2 * attempt_seconds:
        found.problems.append(
            f"transactionLifetimeLimitSeconds is {found.transaction_lifetime} s: the store "
            f"bounds an attempt at {attempt_seconds:g} s and needs at least twice that")
    await _check_indexes(db, found)
    if sharded:
        await _check_shard_keys(client, db, found)
    return found


async def _topology(client: Any, found: Deployment) -> bool:
    """`hello`: what the server is; True for a mongos."""
    hello = await client.admin.command("hello")
    found.max_document_size = int(hello.get("maxBsonObjectSize", DEFAULT_MAX_DOCUMENT_SIZE))
    sharded = hello.get("msg") == "isdbgrid"
    if sharded:
        found.topology, found.transactions = "sharded cluster (mongos)", True
    elif "setName" in hello:
        found.topology, found.transactions = f"replica set {hello['setName']}", True
    else:
        found.topology = "standalone"
        found.problems.append(
            "standalone server: no multi-document transactions (FHIR transactions are refused) "
            "and a crash between a resource's two writes loses its history entry; use a "
            "replica set, even of one node")
    if hello.get("arbiters"):
        found.notes.append("the replica set has arbiters: while a data-bearing member is "
                           "down, majority writes may wait until they time out (503)")
    return sharded


async def _check_indexes(db: Any, found: Deployment) -> None:
    for name, models in layout.INDEXES.items():
        wrong = [model.document["name"] for model in await missing_indexes(db[name], models)]
        if wrong:
            found.problems.append(f"indexes of {name} missing or different ({', '.join(wrong)}): "
                                  "run `fhir-server migrate`")


async def _check_shard_keys(client: Any, db: Any, found: Deployment) -> None:
    config = client["config"]["collections"]
    for name, key in layout.SHARD_KEYS.items():
        try:
            doc = await config.find_one({"_id": f"{db.name}.{name}"})
        except OperationFailure as exc:  # reading `config` needs the clusterMonitor role
            found.notes.append(f"shard keys not checked ({exc.code}): grant the clusterMonitor "
                               "role, or check them by hand (docs/storage.md)")
            return
        actual = dict(doc["key"]) if doc and not doc.get("dropped") else None
        # Compared in order: {shard, _id} and {_id, shard} are different shard keys.
        if actual is None or list(actual.items()) != list(key.items()):
            found.problems.append(f"collection {name} is sharded on {actual}, needs {key} "
                                  "(docs/storage.md, sharded cluster)")
