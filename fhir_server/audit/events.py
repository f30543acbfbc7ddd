"""AuditEvent resources as IHE Basic Audit Log Patterns (BALP) shape them, for R4.

For each interaction: what kind (`type` rest, `subtype` the RESTful interaction), `action`
(C R U D E), when, the `outcome` (0 success, 4 minor failure such as a denial, 8 serious),
who (the user as `fhirUser`, the client application, the network address), the resources
involved and, as `entity` with role "patient", the patient whose data were involved: that
puts the event in that patient's compartment, where they can read it. An interaction that
involved several patients gets one event per patient, so that none reads about another.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from ..access.principal import Principal
from .trail import Trail

_ACTIONS = {"read": "R", "vread": "R", "history-instance": "R", "history-type": "R",
            "history-system": "R", "search-type": "E", "search-system": "E", "create": "C",
            "update": "U", "patch": "U", "delete": "D", "transaction": "E", "batch": "E",
            "operation": "E"}
_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"


def outcome_code(status: int) -> str:
    """AuditEvent.outcome of an HTTP status: 0 success, 4 refused or invalid, 8 failure."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def request_events(*, interaction: str, status: int, recorded: str, principal: Principal | None,
                   address: str | None, trail: Trail, query: str | None) -> list[dict[str, Any]]:
    """The AuditEvents of one interaction: one per patient whose data it read or wrote and
    the caller reaches (IHE BALP: an event per patient subject), each naming that patient,
    their resources and the resources of no patient; plus, when the request involved several
    patients or had a query, one naming none with everything it touched and its query (for
    auditors: a query may name other patients and their search terms). Without any patient:
    one event. The first event is the request's own.

    AuditEvents read count as no patient's data: reading the trail leaves one event, not one
    per patient the events read name, so paging through the trail does not multiply it."""
    seen = _reach_of(principal)
    owners = {key: frozenset() if key.startswith("AuditEvent/") else of
              for key, of in trail.owners.items()}
    named = {p for of in owners.values() for p in of}
    patients = sorted(p for p in named if seen is None or p in seen or p in trail.asked)
    reached = frozenset(patients)

    # Built once: the events of a request share all but their entities (the recorder
    # indexes that part once per request: recorder.py).
    common = _rest_event(interaction, status, recorded, principal, address)

    def event(patient: str | None, resources: list[str], query: str | None) -> dict[str, Any]:
        entities = _entities(patient, resources, query)
        return {**common, "entity": entities} if entities else common

    if not patients:
        return [event(None, list(owners), query)]
    strays = [k for k, o in owners.items() if o and o.isdisjoint(reached)]
    alone = len(patients) == 1 and not strays and not query
    # Each patient's resources in trail order, in one pass (a bulk export names thousands).
    theirs: dict[str, list[str]] = {p: [] for p in patients}
    for key, of in owners.items():
        for patient in (theirs if not of else of & theirs.keys()):
            theirs[patient].append(key)
    events = [event(p, theirs[p], None) for p in patients]
    if not alone:
        events.insert(0, event(None, list(owners), query))
    return events


def figures_events(*, recorded: str, principal: Principal, day: str,
                   patients: Sequence[str]) -> list[dict[str, Any]]:
    """One AuditEvent per patient whose record the day's trial figures read (the operation
    `$match`, done by the server, `principal`, for no caller: trials/figures_pass.py), each
    saying so in its patient entity's description, in that patient's compartment."""
    common = _rest_event("operation", 200, recorded, principal, None)
    said = f"record counted in the anonymous trial figures of {day} (investigators' inverse $match)"
    return [{**common, "entity": [{**_entities(p, [], None)[0], "description": said}]} for p in patients]


def _reach_of(principal: Principal | None) -> set[str] | None:
    """The patients a caller may be recorded as having accessed (None: any): a patient or
    representative their patient, a practitioner the patients whose consent names them.
    System clients, the server, investigators (the referrals sent to them name their
    patients) and an administrator breaking the glass are recorded for whatever they got."""
    if principal is None:
        return set()
    if principal.server or principal.break_glass is not None or principal.recipients is not None:
        return None
    if principal.patient is None and principal.consented is None:
        return None
    return {*([principal.patient] if principal.patient else []), *(principal.consented or ())}


def _rest_event(interaction: str, status: int, recorded: str, principal: Principal | None,
                address: str | None) -> dict[str, Any]:
    """An AuditEvent of a RESTful interaction without its entities; an administrator's
    break-glass read carries purpose of use BTG with the reason they gave."""
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _DICOM,
                             "code": "110153", "display": "Source Role ID"}]},
        "requestor": True,
    }
    if principal is not None:
        if principal.fhir_user:
            agent["who"] = {"reference": principal.fhir_user}
        else:
            agent["who"] = {"display": principal.subject}
        agent["altId"] = principal.client_id
        agent["name"] = principal.subject
    else:
        agent["who"] = {"display": "unauthenticated"}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event = _event(
        {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
         "display": "RESTful Operation"},
        {"system": _INTERACTION_SYSTEM, "code": interaction}, _ACTIONS.get(interaction, "E"),
        recorded, status, agent)
    if principal is not None and principal.break_glass is not None:
        event["purposeOfEvent"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG",
            "display": "break the glass"}], "text": principal.break_glass}]
    return event


def _entities(patient: str | None, resources: list[str], query: str | None) -> list[dict[str, Any]]:
    """AuditEvent.entity of an event about `patient` (or none): the patient, the other
    `resources`, the `query`."""
    entities: list[dict[str, Any]] = []
    if patient is not None:
        entities.append({"what": {"reference": f"Patient/{patient}"},
                         "role": {"system": _ROLE, "code": "1", "display": "Patient"}})
    entities += [{"what": {"reference": key},
                  "role": {"system": _ROLE, "code": "4", "display": "Domain Resource"}}
                 for key in resources if not key.startswith("Patient/")]
    if query:
        entities.append({"query": base64.b64encode(query.encode()).decode(),
                         "role": {"system": _ROLE, "code": "24", "display": "Query"}})
    return entities


def erasure_event(*, recorded: str, principal: Principal | None, address: str | None,
                  patient: str, reason: str, counts: dict[str, tuple[int, int]],
                  keys: int, events: int = 0) -> dict[str, Any]:
    """The AuditEvent of a patient's erasure (Patient/$erase, action D): who, when, why, and
    per type how many resources and versions were removed, and how many subscription events
    (subscriptions/records.py `forget`), as details of the patient entity;
    nothing of the erased resources' content. The patient is named as text, never as a
    reference: the event is then in no patient's compartment, so it is sealed under the
    AuditEvent type's key and outlives the patient's destroyed key."""
    event = _rest_event("operation", 200, recorded, principal, address)
    event["action"] = "D"
    agent = event["agent"][0]
    if agent["who"].get("reference") == f"Patient/{patient}":  # the patient's own request
        agent["who"] = {"display": f"Patient/{patient}"}
    details = [{"type": "operation", "valueString": "$erase"},
               {"type": "reason", "valueString": reason},
               {"type": "data keys destroyed", "valueString": str(keys)},
               {"type": "subscription events", "valueString": str(events)}]
    details += [{"type": resource_type, "valueString": f"{resources} resources, {versions} versions"}
                for resource_type, (resources, versions) in counts.items()]
    event["entity"] = [{"name": f"Patient/{patient}", "detail": details,
                        "role": {"system": _ROLE, "code": "1", "display": "Patient"}}]
    return event


_SECURITY_SUBTYPES = {
    "login": {"system": _DICOM, "code": "110122", "display": "Login"},
    "token": {"system": _DICOM, "code": "110127", "display": "Authorization"},
    "terms": {"system": _DICOM, "code": "110137", "display": "User Security Attributes Changed"},
}


def security_event(*, kind: str, status: int, recorded: str, who: str, client_id: str | None,
                   address: str | None, fhir_user: str | None = None,
                   terms: str | None = None) -> dict[str, Any]:
    """The AuditEvent of a sign-in, a token request or the acceptance of version `terms` of
    the platform's terms at sign-in (BALP: security events, DICOM 110114 User
    Authentication; `kind` is `login`, `token` or `terms`)."""
    agent: dict[str, Any] = {"who": {"reference": fhir_user} if fhir_user else {"display": who},
                             "name": who, "requestor": True}
    if client_id:
        agent["altId"] = client_id
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event = _event({"system": _DICOM, "code": "110114", "display": "User Authentication"},
                   dict(_SECURITY_SUBTYPES[kind]), "E", recorded, status, agent)
    if terms is not None:
        event["entity"] = [{"name": "terms of use", "detail": [{"type": "version", "valueString": terms}],
                            "role": {"system": _ROLE, "code": "13", "display": "Security Resource"}}]
    return event


def _event(kind: dict[str, str], subtype: dict[str, str], action: str, recorded: str,
           status: int, agent: dict[str, Any]) -> dict[str, Any]:
    """The parts every AuditEvent of this server has."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": kind, "subtype": [subtype], "action": action,
        "recorded": recorded, "outcome": outcome_code(status), "agent": [agent],
        "source": {"observer": {"display": "fhir-server"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
    }
    if status >= 400:
        event["outcomeDesc"] = f"HTTP {status}"
    return event


def interaction_of(method: str, path: str) -> str:
    """The RESTful interaction a request under the FHIR base path is (`path` relative to it)."""
    parts = [p for p in path.split("/") if p]
    # An operation, or what it made: `$export-status/<job>`, `$export-file/<job>/<name>`.
    if any(part.startswith("$") for part in parts):
        return "operation"
    if method == "POST" and not parts:
        return "transaction"
    if parts and parts[-1] == "_search" or (method == "GET" and len(parts) <= 1):
        return "search-type" if parts and parts[0] != "_search" else "search-system"
    if "_history" in parts:
        position = parts.index("_history")
        if position + 1 < len(parts):
            return "vread"
        return {0: "history-system", 1: "history-type"}.get(position, "history-instance")
    if len(parts) == 3 and method == "GET":  # compartment search /Patient/1/Observation
        return "search-type"
    return {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(method, "operation")


# What each command-line command is, as (type, subtype): loads are DICOM Import (their files run
# as batch Bundles through the services); the administration commands change the security
# configuration (DICOM Security Alert).
_SECURITY_ALERT = {"system": _DICOM, "code": "110113", "display": "Security Alert"}
_SECURITY_CONFIGURATION = {"system": _DICOM, "code": "110129", "display": "Security Configuration"}
_EXPORT = {"system": _DICOM, "code": "110106", "display": "Export"}
_IMPORT = {"system": _DICOM, "code": "110107", "display": "Import"}
_PATIENT_RECORD = {"system": _DICOM, "code": "110110", "display": "Patient Record"}
_QUERY = {"system": _DICOM, "code": "110112", "display": "Query"}
_COMMANDS = {
    "load": ({"system": _DICOM, "code": "110107", "display": "Import"},
             {"system": _INTERACTION_SYSTEM, "code": "batch", "display": "batch"}),
    "terminology load": ({"system": _DICOM, "code": "110107", "display": "Import"},
                         {"system": _INTERACTION_SYSTEM, "code": "create", "display": "create"}),
    **{f"user {action}": (_SECURITY_ALERT, {"system": _DICOM, "code": "110137",
                                            "display": "User Security Attributes Changed"})
       for action in ("add", "suspend", "reinstate")},
    "client add": (_SECURITY_ALERT, _SECURITY_CONFIGURATION),
    "keys rotate": (_SECURITY_ALERT, _SECURITY_CONFIGURATION),
    # HL7 v2 messages kept in the inbox: listed (their reasons name patients), or applied again.
    "hl7 errors": ({"system": _DICOM, "code": "110112", "display": "Query"},
                   {"system": _INTERACTION_SYSTEM, "code": "search-system", "display": "search-system"}),
    "hl7 replay": ({"system": _DICOM, "code": "110107", "display": "Import"},
                   {"system": _INTERACTION_SYSTEM, "code": "transaction", "display": "transaction"}),
    # A backup archive is an export of the whole store, a restore an import of one.
    "backup": (_EXPORT, _EXPORT),
    "restore": (_IMPORT, _IMPORT),
    # the search index rebuilt in place under the settings' blind indexes (store/index_layout.py)
    "reindex": ({"system": _DICOM, "code": "110100", "display": "Application Activity"},
                {"system": _INTERACTION_SYSTEM, "code": "update", "display": "update"}),
    # Bulk Data exports (docs/export.md): an organisation's data out, a job cancelled
    "export organization": (_EXPORT, _EXPORT),
    "export cancel": (_EXPORT, {"system": _INTERACTION_SYSTEM, "code": "delete", "display": "delete"}),
    # the register decides who may hold a professional's account
    "rpps load": (_IMPORT, _SECURITY_CONFIGURATION),
    # the register of rights requests: Tasks about a person, and the report of late ones
    **{f"rights {step}": (_PATIENT_RECORD, {"system": _INTERACTION_SYSTEM, "code": code,
                                            "display": code})
       for step, code in (("add", "create"), ("forward", "update"), ("answer", "update"))},
    # the retention run: records archived, erased, logs pruned (privacy/retention.py)
    "retention run": ({"system": _DICOM, "code": "110110", "display": "Patient Record"},
                      {"system": _INTERACTION_SYSTEM, "code": "delete", "display": "delete"}),
    "retention close-account": (_SECURITY_ALERT, {"system": _DICOM, "code": "110137",
                                                   "display": "User Security Attributes Changed"}),
    "rights overdue": (_QUERY, {"system": _INTERACTION_SYSTEM, "code": "search-type",
                                "display": "search-type"}),
    # the registers of breaches and of disclosures to authorities: Tasks, and late breaches
    **{command: (_PATIENT_RECORD, {"system": _INTERACTION_SYSTEM, "code": code, "display": code})
       for command, code in (("breach add", "create"), ("breach notify", "update"),
                             ("disclosure add", "create"))},
    "disclosure list": (_QUERY, {"system": _INTERACTION_SYSTEM, "code": "search-type",
                                 "display": "search-type"}),
    "breach overdue": (_QUERY, {"system": _INTERACTION_SYSTEM, "code": "search-type",
                                "display": "search-type"}),
}


def command_event(*, command: str, action: str, recorded: str, operator: str,
                  entities: list[dict[str, Any]], problem: str | None = None) -> dict[str, Any]:
    """The AuditEvent of a `fhir-server` command (`command` a key of _COMMANDS) run by the
    operating-system user `operator`; `problem` makes it a minor failure and says what."""
    kind, subtype = _COMMANDS[command]
    agent: dict[str, Any] = {"who": {"display": operator}, "name": operator,
                             "altId": f"fhir-server {command}", "requestor": True}
    event = _event(dict(kind), dict(subtype), action, recorded, 200, agent)
    if problem:
        event["outcome"], event["outcomeDesc"] = "4", problem
    if entities:
        event["entity"] = entities
    return event


def notification_event(*, recorded: str, subscription: str, endpoint: str, status: int,
                       focus: list[str], patients: list[str], kind: str) -> dict[str, Any]:
    """The AuditEvent of a subscription notification the server sent (DICOM 110106 Export,
    action R): the Subscription, the patients and resources it told of (`focus`), the
    receiver's endpoint and answer (`status`, 0 when it did not answer); `kind` is the
    notification type (handshake, heartbeat, event-notification)."""
    agent: dict[str, Any] = {"who": {"display": "fhir-server"}, "name": "fhir-server",
                             "requestor": False, "network": {"address": endpoint, "type": "5"}}
    event = _event({"system": _DICOM, "code": "110106", "display": "Export"},
                   {"system": "http://hl7.org/fhir/subscription-notification-type", "code": kind},
                   "R", recorded, status if status else 503, agent)
    event["entity"] = [{"what": {"reference": subscription},
                        "role": {"system": _ROLE, "code": "21", "display": "Job Stream"}},
                       *_entities(None, focus, None)]
    event["entity"] += [{"what": {"reference": f"Patient/{p}"},
                         "role": {"system": _ROLE, "code": "1", "display": "Patient"}} for p in patients]
    return event
