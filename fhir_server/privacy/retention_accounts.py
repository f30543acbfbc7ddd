"""The `accounts` rule of the retention (docs/privacy.md, "Accounts"). An account is
**inactive** since it was last signed in to with both factors (or created, or first seen by
this rule, for accounts older than it). On the first day T with `T - inactive >= that day` it
is closed (its holder can no longer sign in); its holder is warned `warned` before. A closed
account's data stays `exportable` (the operator can still hand its holder their record), then
is erased: the account. A patient's record goes with it (`$erase`, or a pseudonymised archive
under a legal hold) only when the holder asked for the deletion (`fhir-server retention
close-account --asked`): an unused portal says nothing of the record, which their care may
still be writing; it follows the `patient-record` rule. An asked deletion comes `exportable`
after the request and never later than `deletion-within` after it.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, Protocol

from .. import clock

if TYPE_CHECKING:
    from .retention import Lifecycle, Plan


class AccountBook(Protocol):
    """The user accounts (auth/accounts.py `Accounts`)."""

    def accounts(self) -> list[dict[str, Any]]: ...

    def close(self, username: str, *, asked: bool = False, seen: str | None = None) -> bool: ...

    def delete(self, username: str) -> None: ...


def _day(instant: str | None) -> date | None:
    return date.fromisoformat(instant[:10]) if instant else None


def erasure_day(life: Lifecycle, account: dict[str, Any]) -> date | None:
    """The day a closed account's data is erased (None: not closed)."""
    closed = _day(account["closed"])
    if closed is None:
        return None
    day = life.policy.period("accounts", "exportable").after(closed)
    asked = _day(account["deletion_asked"])
    if asked is not None:
        day = min(day, life.policy.period("accounts", "deletion-within").after(asked),
                  life.policy.period("accounts", "exportable").after(asked))
    return day


async def plan(life: Lifecycle, made: Plan) -> None:
    """Closures, warnings and erasures of accounts due on `made.today`."""
    from .retention import Action  # noqa: PLC0415 - the module that imports this one

    if life.accounts is None:
        return
    policy = life.policy
    sent = await life.warnings.scheduled("retention/accounts/") if life.warnings else set()
    for account in life.accounts.accounts():
        name = account["username"]
        erase_on = erasure_day(life, account)
        if erase_on is not None:
            if erase_on <= made.today:
                made.actions.append(Action("accounts", "erase", name, detail=account))
            continue
        last = _day(account["last_seen"])
        assert last is not None  # set on creation, at sign-in, or when first listed
        closure = policy.period("accounts", "inactive").after(last)
        if closure <= made.today:
            made.actions.append(Action("accounts", "close", name, detail=account["last_seen"]))
        elif (life.warnings is not None and policy.period("accounts", "warned").before(closure)
              <= made.today and _key(name, closure) not in sent):
            made.actions.append(Action("accounts", "warn", name, detail=(account, closure)))


def _key(username: str, closure: date) -> str:
    return f"retention/accounts/{username}/{closure}"


async def do(life: Lifecycle, step: str, username: str, detail: Any) -> None:
    """One account action of a run."""
    from .retention import archive, sweep  # noqa: PLC0415 - see plan

    assert life.accounts is not None
    if step == "close":  # not if signed in to since the plan
        life.accounts.close(username, seen=detail)
    elif step == "warn":
        assert life.warnings is not None
        account, closure = detail
        await life.warnings.warn(person=account["fhir_user"], template="account-closure-warning",
                                 params={"date": closure.isoformat()},
                                 not_before=datetime.combine(clock.now().date(), time(),
                                                             clock.now().tzinfo),
                                 key=_key(username, closure))
    elif step == "erase":
        kind, _, id = detail["fhir_user"].partition("/")
        if (kind == "Patient" and detail["deletion_asked"]
                and await life.ctx.store.read("Patient", id) is not None):
            why = await life.holds.held(id)
            if why:
                await archive(life, id, f"account closed; erasure held: {why}")
            else:
                await sweep(life.server, id, "account closed: its data erased", requested=True)
        life.accounts.delete(username)
