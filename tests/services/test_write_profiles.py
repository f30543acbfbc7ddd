"""Profiles required on write apply to what clients write, not to the server's own writes
(its workflows' notices, referrals, registers), which have shapes of their own."""

from __future__ import annotations

from typing import Any

from fhir_server.access import Principal, Role, server_principal
from fhir_server.access.scopes import parse_scopes
from fhir_server.model.profiles import FR_CORE_PATIENT_INS, write_profiles
from fhir_server.model.validation import Validator
from fhir_server.search.registry import default_registry
from fhir_server.services import crud
from fhir_server.services.context import Context
from fhir_server.settings import WriteProfileSetting


def _ctx(principal: Principal) -> Context:
    return Context(store=None, validator=Validator(use_models=False),  # type: ignore[arg-type]
                   registry=default_registry(), principal=principal, write_profiles=write_profiles(
                       [WriteProfileSetting(type="Patient", profiles=[FR_CORE_PATIENT_INS])]))


def test_a_rule_for_every_client_spares_the_servers_own_writes() -> None:
    plain: dict[str, Any] = {"resourceType": "Patient", "gender": "female"}
    ehr = Principal(Role.SYSTEM, subject="ehr", client_id="ehr", grant=parse_scopes("system/*.cruds"))
    assert any(i.severity == "error" for i in crud.resource_issues(_ctx(ehr), "Patient", plain))
    assert crud.resource_issues(_ctx(server_principal("server")), "Patient", plain) == []
