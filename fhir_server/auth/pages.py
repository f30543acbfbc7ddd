"""The login, second-factor, terms and consent pages, in French and English.

Rendered on the server with Jinja2 (autoescaped). The language is the first of `ui_locales`
(OpenID Connect) or of the browser's Accept-Language that we have, French by default for this
French platform. Requested access is described in plain words, never as raw scope strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..access import Grant, ResourceScope, parse_scopes

LANGUAGES = ("fr", "en")

TEXT: dict[str, dict[str, str]] = {
    "fr": {
        "service": "Plateforme essais cliniques",
        "login_title": "Connexion",
        "login_intro": "L'application « {app} » demande à accéder à vos données. Identifiez-vous.",
        "username": "Identifiant",
        "password": "Mot de passe",
        "sign_in": "Se connecter",
        "bad_login": "Identifiant ou mot de passe incorrect.",
        "locked": "Trop d'essais infructueux. Réessayez dans {seconds} secondes.",
        "totp_title": "Code de vérification",
        "totp_intro": "Saisissez le code à 6 chiffres affiché par votre application d'authentification.",
        "enrol_title": "Activer la double authentification",
        "enrol_intro": "Ajoutez ce compte à votre application d'authentification, puis saisissez le code qu'elle affiche.",
        "enrol_secret": "Clé à saisir :",
        "enrol_uri": "Ou adresse otpauth :",
        "code": "Code à 6 chiffres",
        "verify": "Vérifier",
        "bad_code": "Code incorrect ou déjà utilisé.",
        "email_offer": "Pas d'application d'authentification sous la main ?",
        "email_send": "Recevoir un code par e-mail",
        "email_sent": "Un code vous a été envoyé par e-mail. Il expire dans {minutes} minutes.",
        "email_wait": "Un code vient de vous être envoyé : attendez une minute avant d'en demander un autre (trois au plus).",
        "email_failed": "Le code n'a pas pu être envoyé par e-mail. Utilisez votre application d'authentification ou réessayez plus tard.",
        "pick_title": "Choisir un patient",
        "pick_intro": "Choisissez le dossier que l'application doit ouvrir.",
        "pick_legend": "Patients qui vous ont donné leur accord",
        "pick_continue": "Continuer",
        "pick_none": "Aucun patient ne vous a donné son accord : il n'y a pas de dossier à ouvrir.",
        "consent_title": "Autoriser l'accès",
        "consent_intro": "L'application « {app} » demande à :",
        "approve": "Autoriser",
        "deny": "Refuser",
        "expired": "Cette demande a expiré ou n'est plus valable. Recommencez depuis l'application.",
        "suspended": "Ce compte est suspendu. Contactez l'équipe de la plateforme.",
        "terms_title": "Conditions d'utilisation",
        "terms_intro": "Pour continuer, acceptez les conditions d'utilisation de la plateforme (version {version}).",
        "terms_read": "Lire les conditions d'utilisation",
        "terms_accept": "J'accepte",
        "terms_decline": "Je refuse",
        "invalid": "Cette demande d'autorisation n'est pas valable : {why}",
        "identity": "savoir qui vous êtes",
        "offline": "rester connectée quand vous ne l'utilisez pas",
        "launch_patient": "savoir quel dossier patient est concerné",
        "patient_level": "dans votre dossier",
        "user_level": "dans les dossiers auxquels vous avez accès",
        "system_level": "dans tous les dossiers",
        "c": "créer", "r": "lire", "u": "modifier", "d": "supprimer", "s": "rechercher",
        "all_types": "toutes les données",
        "restricted": "(seulement : {query})",
    },
    "en": {
        "service": "Clinical trials platform",
        "login_title": "Sign in",
        "login_intro": "The application “{app}” asks to access your data. Please sign in.",
        "username": "Username",
        "password": "Password",
        "sign_in": "Sign in",
        "bad_login": "Wrong username or password.",
        "locked": "Too many failed attempts. Try again in {seconds} seconds.",
        "totp_title": "Verification code",
        "totp_intro": "Enter the 6-digit code shown by your authenticator app.",
        "enrol_title": "Turn on two-step verification",
        "enrol_intro": "Add this account to your authenticator app, then enter the code it shows.",
        "enrol_secret": "Key to enter:",
        "enrol_uri": "Or otpauth address:",
        "code": "6-digit code",
        "verify": "Verify",
        "bad_code": "Wrong or already used code.",
        "email_offer": "No authenticator app at hand?",
        "email_send": "Get a code by e-mail",
        "email_sent": "A code was sent to you by e-mail. It expires in {minutes} minutes.",
        "email_wait": "A code was just sent to you: wait a minute before asking for another (three at most).",
        "email_failed": "The code could not be sent by e-mail. Use your authenticator app or try again later.",
        "pick_title": "Choose a patient",
        "pick_intro": "Choose the record the application should open.",
        "pick_legend": "Patients who gave you their consent",
        "pick_continue": "Continue",
        "pick_none": "No patient has given you their consent: there is no record to open.",
        "consent_title": "Allow access",
        "consent_intro": "The application “{app}” asks to:",
        "approve": "Allow",
        "deny": "Deny",
        "expired": "This request has expired or is no longer valid. Start again from the application.",
        "suspended": "This account is suspended. Contact the platform's team.",
        "terms_title": "Terms of use",
        "terms_intro": "To go on, accept the platform's terms of use (version {version}).",
        "terms_read": "Read the terms of use",
        "terms_accept": "I accept",
        "terms_decline": "I decline",
        "invalid": "This authorization request is not valid: {why}",
        "identity": "know who you are",
        "offline": "stay connected while you are not using it",
        "launch_patient": "know which patient record is concerned",
        "patient_level": "in your record",
        "user_level": "in the records you have access to",
        "system_level": "in every record",
        "c": "create", "r": "read", "u": "update", "d": "delete", "s": "search",
        "all_types": "all data",
        "restricted": "(only: {query})",
    },
}

# Resource types as people call them, for the consent screen; others keep their FHIR name.
TYPE_NAMES: dict[str, dict[str, str]] = {
    "fr": {"Patient": "l'identité du patient", "Observation": "les résultats et mesures",
           "Condition": "les diagnostics", "MedicationRequest": "les prescriptions",
           "Consent": "les consentements", "Communication": "les messages",
           "ResearchStudy": "les essais cliniques", "Procedure": "les actes",
           "AllergyIntolerance": "les allergies", "DiagnosticReport": "les comptes rendus"},
    "en": {"Patient": "the patient's identity", "Observation": "results and measurements",
           "Condition": "diagnoses", "MedicationRequest": "prescriptions",
           "Consent": "consents", "Communication": "messages",
           "ResearchStudy": "clinical trials", "Procedure": "procedures",
           "AllergyIntolerance": "allergies", "DiagnosticReport": "reports"},
}

_CONTEXT_WORDS = {"openid": "identity", "fhirUser": "identity", "profile": "identity",
                  "offline_access": "offline",
                  "launch/patient": "launch_patient"}

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def language(ui_locales: str | None, accept_language: str | None) -> str:
    """The page language: the first of `ui_locales`, then of Accept-Language, we have."""
    for source in (ui_locales or "", accept_language or ""):
        for part in source.replace(",", " ").split():
            code = part.split(";")[0].split("-")[0].lower()
            if code in LANGUAGES:
                return code
    return "fr"


def describe(scope_text: str, lang: str) -> list[str]:
    """The requested access, one plain sentence per item (context scopes merged)."""
    t = TEXT[lang]
    grant: Grant = parse_scopes(scope_text)
    lines = [t[key] for key in dict.fromkeys(_CONTEXT_WORDS[c] for c in sorted(grant.context)
                                             if c in _CONTEXT_WORDS)]
    lines += [_describe_scope(scope, lang) for scope in grant.scopes]
    return lines


def _describe_scope(scope: ResourceScope, lang: str) -> str:
    t = TEXT[lang]
    verbs = [t[letter] for letter in "cruds" if letter in scope.permissions]
    what = (t["all_types"] if scope.resource_type == "*"
            else TYPE_NAMES[lang].get(scope.resource_type, scope.resource_type))
    sentence = f"{', '.join(verbs)} {what} {t[f'{scope.level}_level']}"
    if scope.query:
        sentence += " " + t["restricted"].format(
            query=", ".join(f"{k}={v}" for k, v in scope.query))
    return sentence


def render(template: str, lang: str, **values: Any) -> str:
    """A page in `lang`."""
    return _environment.get_template(template).render(lang=lang, t=TEXT[lang], **values)
