"""The words of the human-readable exports, in French and English."""

from __future__ import annotations

from typing import Literal

Language = Literal["fr", "en"]

LABELS: dict[str, dict[Language, str]] = {
    "title": {"fr": "Mon dossier médical", "en": "My medical record"},
    "made": {"fr": "Copie établie le {day} à la demande de {who}.",
             "en": "Copy made on {day} at the request of {who}."},
    "born": {"fr": "Né(e) le", "en": "Born"},
    "identifier": {"fr": "Identifiant", "en": "Identifier"},
    "conditions": {"fr": "Problèmes de santé", "en": "Conditions"},
    "observations": {"fr": "Observations et résultats, par date", "en": "Observations and results, by date"},
    "consents": {"fr": "Consentements", "en": "Consents"},
    "referrals": {"fr": "Adressages à des essais cliniques et réponses",
                  "en": "Referrals to clinical trials and their answers"},
    "accesses": {"fr": "Qui a consulté mon dossier", "en": "Who accessed my record"},
    "other": {"fr": "Autres éléments du dossier (nombre par type)",
              "en": "Other items of the record (count by type)"},
    "none": {"fr": "Aucun élément.", "en": "Nothing recorded."},
    "date": {"fr": "Date", "en": "Date"},
    "what": {"fr": "Intitulé", "en": "Description"},
    "value": {"fr": "Valeur", "en": "Value"},
    "status": {"fr": "Statut", "en": "Status"},
    "onset": {"fr": "Début", "en": "Onset"},
    "scope": {"fr": "Objet", "en": "Scope"},
    "period": {"fr": "Période", "en": "Period"},
    "decision": {"fr": "Décision", "en": "Decision"},
    "actors": {"fr": "Personnes autorisées", "en": "Authorised people"},
    "study": {"fr": "Essai", "en": "Trial"},
    "sender": {"fr": "Adressé par", "en": "Referred by"},
    "answer": {"fr": "Réponse", "en": "Answer"},
    "who": {"fr": "Qui", "en": "Who"},
    "action": {"fr": "Action", "en": "Action"},
    "type": {"fr": "Type", "en": "Type"},
    "count": {"fr": "Nombre", "en": "Count"},
    "patient": {"fr": "Patient", "en": "Patient"},
    "sent": {"fr": "Envoyé le", "en": "Sent"},
    "outcome": {"fr": "Résultat", "en": "Outcome"},
    "answered": {"fr": "Répondu le", "en": "Answered"},
    "page": {"fr": "Page {n}", "en": "Page {n}"},
    "sheet": {"fr": "Adressages", "en": "Referrals"},
}

# AuditEvent actions (R4 audit-event-action) and Consent decisions (consent-provision-type).
ACTIONS: dict[str, dict[Language, str]] = {
    "C": {"fr": "création", "en": "create"}, "R": {"fr": "lecture", "en": "read"},
    "U": {"fr": "modification", "en": "update"}, "D": {"fr": "suppression", "en": "delete"},
    "E": {"fr": "exécution", "en": "execute"},
}
DECISIONS: dict[str, dict[Language, str]] = {
    "permit": {"fr": "autorise", "en": "permits"}, "deny": {"fr": "refuse", "en": "denies"},
}


def label(key: str, language: Language, **values: str) -> str:
    """The label `key` in `language`, with `values` put in."""
    return LABELS[key][language].format(**values)
