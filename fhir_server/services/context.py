"""What every interaction needs: the store, the validator, the search registry, limits, and
the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..access import ConfirmationCodes, Principal
from ..audit.trail import Trail
from ..crypto import KeyDirectory
from ..model.profiles import WriteProfiles
from ..model.validation import Validator
from ..search import Registry
from ..store.base import Store, Version
from ..terminology_service import Catalogue

if TYPE_CHECKING:
    from .erase import Erasures

# Called after every commit of the service layer with the versions written (the platform's
# workflows react to writes this way: trials/withdrawal.py).
Hook = Callable[["Context", Sequence[Version]], Awaitable[None]]
# Asked first by every create: a workflow may take the resource as its own write (an
# investigator's answer to a referral: trials/referral.py) and return what it stored.
Creator = Callable[["Context", str, "Payload"], Awaitable[Version | None]]


@dataclass(frozen=True, slots=True)
class Context:
    """Dependencies of the service layer, built once by `app.create_app`."""

    store: Store
    validator: Validator
    registry: Registry
    base_url: str = "http://localhost:8080/fhir"
    default_page_size: int = 20
    max_page_size: int = 5000
    site_status_max_age_days: int = 90  # a trial site's status older than this is unknown
    principal: Principal | None = None  # who calls; set per request (deny when None)
    trail: Trail | None = None  # what the request touched, for its AuditEvent
    hooks: tuple[Hook, ...] = ()
    creators: tuple[Creator, ...] = ()
    codes: ConfirmationCodes | None = None  # one-time codes confirming proposed Consents
    keys: KeyDirectory | None = None  # public sealing keys (services/sealed.py)
    sealed_only: bool = False  # clients' messages must be sealed (services/sealed.py)
    erasures: Erasures | None = None  # Patient/$erase (services/erase.py); None: not offered
    terminology: Catalogue | None = None  # CodeSystems, ValueSets, ConceptMaps held
    pseudonym_key: bytes | None = None  # keys trial pre-screening pseudonyms (trials/inverse.py)
    write_profiles: WriteProfiles = WriteProfiles()  # profiles required per type and client


async def after_commit(ctx: Context, versions: Sequence[Version]) -> None:
    """Run the commit hooks on what a unit of work wrote."""
    for hook in ctx.hooks:
        await hook(ctx, versions)


@dataclass(frozen=True, slots=True)
class Payload:
    """A resource sent by a client, in two views of the same JSON.

    `checked` has plain floats (validation, indexing); `exact` keeps decimals as written and
    is what gets stored (see model/jsonbody.py). They are the same object when the JSON holds
    no decimal. `depth`: their levels of objects and arrays when the body's parse counted
    them (`jsonbody.parse_counted`), so that validation does not walk them again; whoever
    nests anything deeper in them drops it.
    """

    checked: dict[str, Any]
    exact: dict[str, Any]
    depth: int | None = None
