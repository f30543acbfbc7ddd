"""`CodeSystem/$lookup` and `CodeSystem/$validate-code` (FHIR R4 codesystem-operation-lookup,
codesystem-operation-validate-code), and the check of one coding both validate-codes share.

A code system the server does not hold is never taken as valid: $lookup answers NOT_FOUND
naming it, $validate-code `result` false with a message saying the code could not be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.errors import Kind, fail
from .catalogue import Catalogue
from .codesystems import CodeSystem, Concept
from .parameters import Inputs, param, parameters, required

# The parameters of each operation and their kinds (parameters.Inputs). `date` is not taken:
# the server holds one version of each system.
CODED = {"code": "text", "coding": "valueCoding"}
LOOKUP = {**CODED, "system": "text", "version": "text", "displayLanguage": "text",
          "property": "text"}
CODE_SYSTEM_VALIDATE = {**CODED, "url": "text", "version": "text", "display": "text",
            "codeableConcept": "valueCodeableConcept", "abstract": "boolean",
            "displayLanguage": "text"}
# The properties $lookup returns when the client names none.
_OWN = ("parent", "child", "inactive", "definition")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one coding: valid or not, why, and the right display;
    `checked` false when the server could not tell (a system or value set it does not hold):
    the result is then false, and a profile validator may make it a warning."""

    result: bool
    message: str | None = None
    display: str | None = None
    checked: bool = True

    def as_parameters(self) -> dict[str, Any]:
        return parameters(param("result", "valueBoolean", self.result),
                          param("message", "valueString", self.message),
                          param("display", "valueString", self.display))


def lookup(catalogue: Catalogue, inputs: Inputs) -> dict[str, Any]:
    """The Parameters describing a code; NOT_FOUND when its system or the code is unknown."""
    [coding] = inputs.codings()
    if not isinstance(coding.get("system"), str) or not isinstance(coding.get("code"), str):
        raise required("The coding needs a system and a code.", "coding")
    system = catalogue.code_system(coding["system"], coding.get("version"))
    if system is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"The server does not hold code system "
                   f"{coding.get('system')}{_version(coding)}.", expression="system",
                   details_code="MSG_NO_MATCH")
    concept = system.find(coding["code"])
    if concept is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"Code {coding.get('code')!r} is not in code "
                   f"system {system.url}.", expression="code", details_code="MSG_NO_MATCH")
    language = inputs.string("displayLanguage")
    wanted = inputs.strings("property")
    resource = system.resource
    return parameters(
        param("name", "valueString", resource.get("name") or resource.get("title") or system.url),
        param("version", "valueString", system.version),
        param("display", "valueString", concept.display_in(language)),
        *(_designation(d) for d in concept.designations),
        *_properties(system, concept, wanted or _OWN + tuple(p["code"] for p in concept.properties)),
    )


def _version(coding: dict[str, Any]) -> str:
    return f" version {coding['version']}" if coding.get("version") else ""


def _designation(designation: dict[str, Any]) -> dict[str, Any]:
    parts = [param("language", "valueCode", designation.get("language")),
             param("use", "valueCoding", designation.get("use")),
             param("value", "valueString", designation.get("value"))]
    return {"name": "designation", "part": [p for p in parts if p is not None]}


def _properties(system: CodeSystem, concept: Concept, wanted: tuple[str, ...] | list[str]
                ) -> list[dict[str, Any]]:
    out = []
    for code in dict.fromkeys(wanted):
        values: list[tuple[str, Any]]
        if code in ("parent", "child"):
            values = [("valueCode", c) for c in (concept.parents if code == "parent" else concept.children)]
        elif code == "inactive":
            values = [("valueBoolean", concept.inactive)]
        elif code == "definition":
            values = [("valueString", concept.definition)] if concept.definition else []
        else:
            values = [(k, v) for p in concept.properties if p["code"] == code
                      for k, v in p.items() if k.startswith("value")]
        out += [{"name": "property", "part": [{"name": "code", "valueCode": code},
                                              {"name": "value", key: value}]}
                for key, value in values]
    return out


def check_coding(catalogue: Catalogue, coding: dict[str, Any], *, abstract_ok: bool,
                 language: str | None, system: CodeSystem | None = None
                 ) -> tuple[Verdict, CodeSystem | None, Concept | None]:
    """Whether a coding names a concept of a held code system (or of `system`, one read from
    the store), selectable here (abstract concepts only where `abstract_ok`), with a display
    that is its own or one of its designations; and the system and concept found."""
    url, code = coding.get("system"), coding.get("code")
    if not isinstance(code, str) or not code:
        return Verdict(False, "The coding has no code."), None, None
    if not isinstance(url, str) or not url:
        return Verdict(False, f"Code {code!r} has no system: it cannot be checked."), None, None
    if system is None or system.url != url:
        system = catalogue.code_system(url, coding.get("version"))
    if system is None or system.resource.get("content") == "not-present":
        return Verdict(False, f"Unable to check code {code!r}: the server does not hold code "
                       f"system {url}{_version(coding)}.", checked=False), None, None
    concept = system.find(code)
    if concept is None:
        return Verdict(False, f"Unknown code {code!r} in code system {url}."), system, None
    display = concept.display_in(language)
    if concept.abstract and not abstract_ok:
        return Verdict(False, f"Code {code!r} is abstract: not for use in data.", display), system, concept
    given = coding.get("display")
    if isinstance(given, str) and not concept.has_display(given):
        return Verdict(False, f"Wrong display {given!r} for code {code!r} of {url}: it is "
                       f"{display!r}.", display), system, concept
    if concept.inactive:
        return Verdict(True, f"Code {code!r} of {url} is inactive.", display), system, concept
    return Verdict(True, None, display), system, concept


def validate_in_system(catalogue: Catalogue, inputs: Inputs,
                       code_system: CodeSystem | None = None) -> dict[str, Any]:
    """`CodeSystem/$validate-code` on the system named by `url` or by the instance
    (`code_system`): result, message, display."""
    url = code_system.url if code_system is not None else inputs.string("url")
    codings = inputs.codings("url", code_system.url if code_system is not None else None)
    if url is None and not any(c.get("system") for c in codings):
        raise required("Name the code system: url, or a coding with its system.", "url")
    abstract_ok = inputs.boolean("abstract") is True
    language = inputs.string("displayLanguage")
    verdicts = []
    for coding in codings:
        if url is not None and coding.get("system", url) != url:
            verdicts.append(Verdict(False, f"Coding of {coding.get('system')}, not of {url}."))
            continue
        coding = {"system": url, **coding} if url else coding
        if inputs.has("version") and "version" not in coding:
            coding["version"] = inputs.string("version")
        verdicts.append(check_coding(catalogue, coding, abstract_ok=abstract_ok,
                                     language=language, system=code_system)[0])
    return best(verdicts).as_parameters()


def best(verdicts: list[Verdict]) -> Verdict:
    """A CodeableConcept is valid when one of its codings is (the first valid one speaks);
    else every coding's reason is given."""
    valid = [v for v in verdicts if v.result]
    if valid:
        return valid[0]
    messages = "; ".join(v.message for v in verdicts if v.message)
    return Verdict(False, messages or None, next((v.display for v in verdicts if v.display), None))
