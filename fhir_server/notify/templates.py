"""What notifications say, in French and English.

A message tells its reader that something waits for them on the platform, and where: never
a patient's name, a study, a diagnosis or anything else of a record, since e-mail and SMS
travel and rest outside the platform's protection. Each template declares the parameters it
takes; each parameter's value must match its pattern, so no free text can slip in. The
link (`{link}`) is the platform's address, added when the message is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"
# Parameters a template may take, each with the only values it accepts.
_PATTERNS = {
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "code": re.compile(r"\d{6}"),
    "minutes": re.compile(r"\d{1,3}"),
}


@dataclass(frozen=True, slots=True)
class Text:
    """A message in one language: an e-mail subject and the body (e-mail and SMS)."""

    subject: str
    body: str


_TEMPLATES: dict[str, dict[str, Text]] = {
    "new-message": {
        "fr": Text("Nouveau message", "Vous avez un nouveau message sur la plateforme : {link}"),
        "en": Text("New message", "You have a new message on the platform: {link}"),
    },
    "referral-reminder": {
        "fr": Text("Rappel : un message attend votre réponse",
                   "Rappel : vous avez sur la plateforme un message qui attend votre réponse : {link}"),
        "en": Text("Reminder: a message awaits your answer",
                   "Reminder: you have a message on the platform that awaits your answer: {link}"),
    },
    "retention-warning": {
        "fr": Text("Suppression prochaine de données",
                   "Des données que vous suivez sur la plateforme seront supprimées le {date}, "
                   "selon la politique de conservation : {link}"),
        "en": Text("Data to be deleted soon",
                   "Data you follow on the platform will be deleted on {date} under the "
                   "retention policy: {link}"),
    },
    # the retention's (privacy/retention_accounts.py, privacy/postmortem.py)
    "account-closure-warning": {
        "fr": Text("Fermeture prochaine de votre compte",
                   "Votre compte sur la plateforme sera fermé le {date} faute de connexion depuis "
                   "deux ans. Connectez-vous avant cette date pour le garder : {link}"),
        "en": Text("Your account will be closed soon",
                   "Your account on the platform will be closed on {date}, as it has not been "
                   "used for two years. Sign in before then to keep it: {link}"),
    },
    # sent to a deceased patient's chosen relative (privacy/postmortem.py): it says no more than
    # any other message, since who died and why the person was chosen is health data
    "post-mortem-communication": {
        "fr": Text("Un message vous attend",
                   "Un message vous attend sur la plateforme : {link}"),
        "en": Text("A message awaits you",
                   "A message awaits you on the platform: {link}"),
    },
    "sign-in-code": {
        "fr": Text("Votre code de connexion",
                   "Votre code de connexion est {code}. Il expire dans {minutes} minutes. "
                   "Ne le communiquez à personne."),
        "en": Text("Your sign-in code",
                   "Your sign-in code is {code}. It expires in {minutes} minutes. "
                   "Do not share it with anyone."),
    },
}
# Each template's parameters (besides `link`), read from its English text.
PARAMETERS = {name: frozenset(re.findall(r"{(\w+)}", texts["en"].subject + texts["en"].body)) - {"link"}
               for name, texts in _TEMPLATES.items()}


class TemplateError(ValueError):
    """An unknown template, or parameters it does not take or that do not match."""


def check(template: str, params: Mapping[str, str]) -> None:
    """Raise TemplateError unless `template` exists and takes exactly `params`."""
    wanted = PARAMETERS.get(template)
    if wanted is None:
        raise TemplateError(f"unknown template {template!r}")
    if set(params) != wanted:
        raise TemplateError(f"template {template!r} takes {sorted(wanted)}, not {sorted(params)}")
    for name, value in params.items():
        if not _PATTERNS[name].fullmatch(value):
            raise TemplateError(f"parameter {name!r} of template {template!r} is malformed")


def render(template: str, language: str, params: Mapping[str, str], link: str) -> Text:
    """`template` in `language` (French if it is neither French nor English), pointing to
    `link`."""
    check(template, params)
    text = _TEMPLATES[template][language if language in LANGUAGES else DEFAULT_LANGUAGE]
    return Text(text.subject.format(**params, link=link), text.body.format(**params, link=link))
