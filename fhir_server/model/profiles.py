"""The profiles we validate against, by canonical URL (profiling.html, `meta.profile`).

Two kinds: StructureDefinitions vendored under profiles/ with a snapshot, checked by
`model/snapshot.py`, and FR Core Patient INS, whose package is not held offline, checked by
the INS rules of `model/french_ids.py` (docs/validation.md, "Profiles").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Protocol

from . import french_ids
from .errors import Issue
from .platform_codes import PROFILES_DIR

Check = Callable[[dict[str, Any], str], list[Issue]]

FR_CORE_PATIENT_INS: Final = f"{french_ids.FR_CORE}/StructureDefinition/fr-core-patient-ins"


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile we hold: its canonical URL, the versions we check (a canonical naming
    another is not held), the resource type it constrains, and the check that lists what a
    resource at a FHIRPath prefix breaks."""

    url: str
    versions: re.Pattern[str]
    type: str
    check: Check


# The INS rules (model/french_ids.py) follow FR Core 2.0 to 2.2 (ballots included).
_FR_CORE_VERSIONS: Final = re.compile(r"2\.[012]\.[0-9]+(?:-[0-9A-Za-z.-]+)?")
_NO_VERSION: Final = re.compile(r"(?!)")  # a definition without a version: no `|version` matches


def _ins_check(resource: dict[str, Any], prefix: str) -> list[Issue]:
    return french_ids.patient_issues(resource, prefix, ins_profile=True)


@cache
def _profiles() -> dict[str, Profile]:
    from . import snapshot  # parsing the vendored StructureDefinitions is paid on first use

    held = [Profile(FR_CORE_PATIENT_INS, _FR_CORE_VERSIONS, "Patient", _ins_check)]
    for definition in snapshot.vendored():
        versions = re.compile(re.escape(definition.version)) if definition.version else _NO_VERSION
        held.append(Profile(definition.url, versions, definition.type, definition.check))
    return {p.url: p for p in held}


def find(canonical: str) -> Profile | None:
    """The profile `canonical` (`url` or `url|version`) names, or None if we hold none."""
    url, _, version = canonical.partition("|")
    profile = _profiles().get(url)
    if profile is None or (version and not profile.versions.fullmatch(version)):
        return None
    return profile


def held() -> list[str]:
    """The canonical URLs of every profile we hold, sorted."""
    return sorted(_profiles())


def by_type() -> dict[str, list[str]]:
    """The canonical URLs of the profiles we hold, by the resource type they constrain."""
    found: dict[str, list[str]] = {}
    for url, profile in sorted(_profiles().items()):
        found.setdefault(profile.type, []).append(url)
    return found


def claimed(resource: dict[str, Any]) -> list[str]:
    """The canonicals a resource claims in `meta.profile` (strings only)."""
    meta = resource.get("meta")
    names = meta.get("profile") if isinstance(meta, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


@dataclass(frozen=True, slots=True)
class WriteRule:
    """Profiles required of writes of `type`, by `clients` (None: every client)."""

    type: str
    profiles: tuple[str, ...]
    clients: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class WriteProfiles:
    """The profiles required on write per resource type and client (setting
    `write_profiles`), on top of those a resource claims in `meta.profile`."""

    rules: tuple[WriteRule, ...] = ()

    def for_write(self, resource_type: str, client_id: str | None) -> tuple[str, ...]:
        """The canonicals a write of `resource_type` by `client_id` is checked against."""
        found = [p for r in self.rules if r.type == resource_type
                 and (r.clients is None or client_id in r.clients) for p in r.profiles]
        return tuple(dict.fromkeys(found))


class _Rule(Protocol):
    type: str
    profiles: list[str]
    clients: list[str] | None


def write_profiles(rules: Iterable[_Rule]) -> WriteProfiles:
    """The rules of the setting, each profile checked: held, and constraining that type
    (ValueError naming it otherwise, so that a server does not start with a rule it cannot
    apply)."""
    built = []
    for rule in rules:
        for canonical in rule.profiles:
            profile = find(canonical)
            if profile is None:
                raise ValueError(f"write_profiles: profile {canonical} is not held by this server "
                                 f"(held: {', '.join(held())})")
            if profile.type != rule.type:
                raise ValueError(f"write_profiles: profile {canonical} constrains {profile.type}, "
                                 f"not {rule.type}")
        built.append(WriteRule(rule.type, tuple(rule.profiles),
                               None if rule.clients is None else frozenset(rule.clients)))
    return WriteProfiles(tuple(built))


def profile_issues(resource: dict[str, Any], prefix: str, asked: Iterable[str] = ()) -> list[Issue]:
    """What `resource` breaks in the profiles it claims in `meta.profile` and those `asked`
    (a client's `$validate` `profile`: the caller checks that we hold them). A claimed profile
    we do not hold is a warning: the resource may still conform to it."""
    found: list[Issue] = []
    for canonical in dict.fromkeys([*claimed(resource), *asked]):
        profile = find(canonical)
        if profile is None:
            found.append(Issue(
                code="not-supported", severity="warning",
                diagnostics=f"Profile {canonical} is not known to this server: not checked",
                expression=(f"{prefix}.meta.profile",)))
        elif profile.type != resource["resourceType"]:
            found.append(Issue(
                code="invalid", diagnostics=f"Profile {canonical} constrains {profile.type}, "
                f"not {resource['resourceType']}", expression=(f"{prefix}.meta.profile",)))
        else:
            found.extend(profile.check(resource, prefix))
    return found
