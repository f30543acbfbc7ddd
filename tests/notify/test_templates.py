"""Every notification template, in every language, says no more than that something waits on
the platform (issue 19: "no health data beyond 'you have a new message on the platform' and a
link"): a word of a record, a death, a diagnosis or a trial in any of them fails here, so a
template added later cannot leak one either."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from fhir_server.notify import templates

# Stems (accents dropped, lower case) matched at the start of a word, French and English.
FORBIDDEN = (
    # death
    "death", "dead", "deceased", "died", "dying", "deces", "decede", "mort", "defunt", "deuil",
    "post-mortem", "funer", "obseque", "heritier", "heir", "succession",
    # health, care and diagnosis
    "health", "sante", "medic", "clinic", "diagnos", "patholog", "disease", "maladie", "illness",
    "cancer", "tumor", "tumour", "tumeur", "carcinom", "lymphom", "leukemi", "leucemi", "sarcom",
    "melanom", "metasta", "oncolog", "chemo", "chimio", "radiother", "therap", "traitement",
    "treatment", "symptom", "hopital", "hospital", "doctor", "docteur", "physician", "medecin",
    "nurse", "infirmi", "prescri", "ordonnance", "consult", "result", "resultat", "biops",
    "genetic", "genetique", "hiv", "vih", "pregnan", "grossesse",
    # records, people and studies
    "patient", "record", "dossier", "referral", "adressage", "trial", "essai", "study", "etude",
    "research", "recherche", "protocol", "cohort", "consent", "relative", "proche", "famil",
    "keynote", "checkmate", "eudract", "ctis",
)
TRIAL_NUMBER = re.compile(r"\b(nct\d{8}|\d{4}-\d{6}-\d{2})\b")  # ClinicalTrials.gov, EudraCT
SAMPLES = {"date": "2027-01-31", "code": "123456", "minutes": "10"}
LINK = "https://platform.example.org"


def _plain(text: str) -> str:
    """`text` in lower case without accents, so `Décès` reads `deces`."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                   if not unicodedata.combining(c))


def _leaks(text: str) -> list[str]:
    plain = _plain(text)
    found = [stem for stem in FORBIDDEN if re.search(rf"(?<![a-z]){re.escape(stem)}", plain)]
    return found + TRIAL_NUMBER.findall(plain)


def test_the_forbidden_words_are_caught() -> None:
    """The check itself: the post-mortem wording this test replaced would fail it."""
    assert _leaks("Someone named you to receive their health data after their death.") == [
        "death", "health"]
    assert _leaks("Une personne vous a désigné(e) pour recevoir ses données de santé après son "
                  "décès.") == ["deces", "sante"]
    assert _leaks("Votre essai NCT01234567") == ["essai", "nct01234567"]
    assert _leaks("Vous avez un nouveau message sur la plateforme : https://x.example") == []


@pytest.mark.parametrize("template", sorted(templates.PARAMETERS))
@pytest.mark.parametrize("language", templates.LANGUAGES)
def test_no_template_says_more_than_a_message_waits(template: str, language: str) -> None:
    params = {name: SAMPLES[name] for name in templates.PARAMETERS[template]}
    text = templates.render(template, language, params, LINK)
    assert _leaks(text.subject) == [] and _leaks(text.body) == []
    assert LINK in text.body or template == "sign-in-code"  # the code is typed where it was asked


def test_every_template_is_in_both_languages_and_documented() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "notifications.md").read_text()
    for template in templates.PARAMETERS:
        for language in templates.LANGUAGES:
            templates.render(template, language, {n: SAMPLES[n] for n in templates.PARAMETERS[template]},
                             LINK)
        assert f"| `{template}` |" in documented, template
