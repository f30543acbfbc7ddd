"""The retention policy: how long each kind of record lives (docs/privacy.md, "The data's
lifecycle"). A JSON file checked at start against `profiles/retention_policy.schema.json`,
then against the limits the law sets; the platform's defaults are
`profiles/retention_policy.json`.

Periods are ISO 8601 durations in years, months and days, counted on the calendar: a record
whose period starts on day D is due on the first day T with `T - period >= D` (so a period
starting on 29 February ends, in a year without one, on 28 February).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from ..model.platform_codes import PROFILES_DIR

SCHEMA = PROFILES_DIR / "retention_policy.schema.json"
DEFAULTS = PROFILES_DIR / "retention_policy.json"
_PERIOD = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A calendar period: years, months, days."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        found = _PERIOD.match(text)
        if found is None or not any(found.groups()):
            raise ValueError(f"{text!r} is not a period such as P2Y, P13M or P15D")
        years, months, days = (int(g or 0) for g in found.groups())
        return cls(years, months, days)

    def before(self, day: date) -> date:
        """`day` minus this period (the day clamped to the month's last)."""
        month = day.year * 12 + day.month - 1 - self.years * 12 - self.months
        year, month = divmod(month, 12)
        moved = _clamped(year, month + 1, day.day)
        return date.fromordinal(moved.toordinal() - self.days)

    def after(self, day: date) -> date:
        """`day` plus this period (the day clamped to the month's last)."""
        month = day.year * 12 + day.month - 1 + self.years * 12 + self.months
        year, month = divmod(month, 12)
        moved = _clamped(year, month + 1, day.day)
        return date.fromordinal(moved.toordinal() + self.days)

    def at_least(self, other: Period) -> bool:
        """Whether this period is never shorter than `other`, whatever day it starts."""
        starts = [date(2001, m, d) for m in range(1, 13) for d in (1, 28, 31) if _valid(2001, m, d)]
        starts += [date(2004, 2, 29), date(2004, 1, 31)]
        return all(self.after(day) >= other.after(day) for day in starts)

    def __str__(self) -> str:
        parts = [f"{n}{unit}" for n, unit in zip((self.years, self.months, self.days), "YMD",
                                                strict=True) if n]
        return "P" + "".join(parts)


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _clamped(year: int, month: int, day: int) -> date:
    while not _valid(year, month, day):
        day -= 1
    return date(year, month, day)


@dataclass(frozen=True, slots=True)
class Limit:
    """A bound the law sets on one period of one rule: at least `minimum`, or (`most`) at
    most."""

    rule: str
    field: str
    bound: Period
    why: str
    most: bool = False


LIMITS = (
    Limit("connection-logs", "kept", Period(years=1), "French law has hosts keep the data that "
          "identify who connected for one year (décret n° 2021-1362)"),
    Limit("access-logs", "kept", Period(years=1), "the platform's terms keep the access history "
          "a patient reads for one year"),
    Limit("tele-expertise", "warned", Period(days=1), "the requester must be warned before the "
          "deletion, so at least a day before"),
    Limit("accounts", "warned", Period(days=1), "the holder must be warned before the closure, "
          "so at least a day before"),
    Limit("accounts", "deletion-within", Period(months=1), "a request to erase is answered "
          "within one month (GDPR art. 12(3))", most=True),
)


@dataclass(frozen=True, slots=True)
class Policy:
    """Every rule's periods, by rule and field (`policy.period("patient-record", "inactive")`)."""

    source: str
    rules: dict[str, dict[str, Period]]

    def period(self, rule: str, field: str) -> Period:
        return self.rules[rule][field]

    def describe(self) -> dict[str, dict[str, str]]:
        return {rule: {field: str(p) for field, p in fields.items()}
                for rule, fields in self.rules.items()}


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def load_policy(path: Path | None = None, *, backup_days: int | None = None) -> Policy:
    """The policy in `path` (None: the platform's defaults), checked; PolicyError naming
    what is wrong otherwise. `backup_days` (FHIR_SERVER_BACKUP_RETENTION_DAYS), when given,
    must equal the policy's `backups` period: one truth for how long archives live."""
    source = path or DEFAULTS
    try:
        content = json.loads(source.read_text())
    except OSError as error:
        raise PolicyError(f"retention policy {source}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise PolicyError(f"retention policy {source}: not JSON ({error})") from None
    errors = sorted(_validator().iter_errors(content), key=lambda e: list(e.instance_path))
    if errors:
        raise PolicyError(f"retention policy {source}: " + "; ".join(_explain(e) for e in errors))
    rules = {rule: {field: Period.parse(text) for field, text in fields.items()}
             for rule, fields in content["rules"].items()}
    policy = Policy(str(source), rules)
    problems = [_broken(policy, limit) for limit in LIMITS if not _within(policy, limit)]
    backups = policy.period("backups", "kept")
    if backup_days is not None and backups != Period(days=backup_days):
        problems.append(f"backups.kept is {backups}, but FHIR_SERVER_BACKUP_RETENTION_DAYS is "
                        f"{backup_days}: give the policy P{backup_days}D or change the setting")
    if problems:
        raise PolicyError(f"retention policy {source}: " + "; ".join(problems))
    return policy


def _within(policy: Policy, limit: Limit) -> bool:
    period = policy.period(limit.rule, limit.field)
    return limit.bound.at_least(period) if limit.most else period.at_least(limit.bound)


def _broken(policy: Policy, limit: Limit) -> str:
    period = policy.period(limit.rule, limit.field)
    kind = "longer than the legal maximum" if limit.most else "shorter than the legal minimum"
    return f"{limit.rule}.{limit.field} is {period}, {kind} {limit.bound}: {limit.why}"


def _explain(error: Any) -> str:
    """One schema error as a sentence naming where it is."""
    where = ".".join(str(p) for p in error.instance_path) or "the policy"
    message = str(error.message)
    unknown = re.search(r"\((.*) (?:was|were) unexpected\)", message)
    if unknown:
        return f"{where}: unknown rule or field {unknown.group(1)}"
    if "does not match" in message:
        return f"{where}: {message.split(' does not match')[0]} is not a period such as P2Y, P13M or P15D"
    return f"{where}: {message}"
