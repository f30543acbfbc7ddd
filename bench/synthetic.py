"""A synthetic scale-up of the Synthea sample, with realistic selectivity (for bench/search.py).

The 12 Synthea patient bundles (/work/shared/data/synthea) are cloned over and over. A clone of
a bundle gets:

- fresh ids for every resource of the bundle, and every reference between them rewritten
  (`urn:uuid:` references are first turned into `Type/id`, as a transaction would);
- the shared reference data (Organization, Practitioner, from the hospital and practitioner
  bundles and inline copies) is *not* cloned: clones keep referring to the same organisations
  and practitioners, as a real population does;
- all dates (`YYYY-MM-DD` at the start of any JSON string: birthDate, effectiveDateTime,
  period.start, issued, ...) shifted by one random number of days per clone, between -20 and
  +5 years, so dates spread over decades while each patient's history stays consistent;
- a new Patient name: family name drawn from ~300 French and English surnames, given names from
  ~60 per gender, both with weights 1/sqrt(rank) (the commonest surname is ~2.5% of patients,
  the median one ~0.2%: about the shape of real surname frequencies);
- new Patient identifiers: the Synthea id, a medical record number, a US SSN and a French INS-NIR
  (`urn:oid:1.2.250.1.213.1.4.8`, 13 digits + 2-digit key, consistent with gender and birth date).

Codes (LOINC, SNOMED CT, RxNorm) are kept, so a code's frequency is its frequency among the 12
patients, repeated. Everything is deterministic for a given seed.

Cloning works on text: each bundle is serialised once into a template split at every local id
and every date; a clone is a `"".join` of the template with new ids and shifted dates, parsed
by orjson. That costs 20-80 µs per resource (more on a busy machine), below index extraction
and far below the store write.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson

SYNTHEA = Path("/work/shared/data/synthea")
SHARED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location"})
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"

_TOKEN = re.compile(
    r"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r'|(?<=")(?P<date>\d{4}-\d{2}-\d{2})'
)
_MIN_SHIFT_DAYS, _MAX_SHIFT_DAYS = -20 * 365, 5 * 365

Resource = dict[str, Any]

SURNAMES = """
Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel Lefebvre
Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine Rousseau Vincent
Muller Lefevre Faure Andre Mercier Blanc Guerin Boyer Garnier Chevalier Francois Legrand Gauthier
Garcia Perrin Robin Clement Morin Nicolas Henry Roussel Mathieu Gautier Masson Marchand Duval
Denis Dumont Marie Lemaire Noel Meyer Dufour Meunier Brun Blanchard Giraud Joly Riviere Lucas
Brunet Gaillard Barbier Arnaud Martinez Gerard Roche Renard Schmitt Roy Leroux Colin Vidal
Caron Picard Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre
Benoit Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert
Berger Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer
Klein Jacquet Adam Paris Poirier Marty Aubry Guyot Carre Charles Renault Charpentier Menard
Maillard Baron Bertin Bailly Herve Schneider Fernandez Le_Gall Collet Leger Bouvier Julien
Prevost Millet Perrot Daniel Le_Roux Cousin Germain Breton Besson Langlois Remy Le_Goff
Pelletier Leveque Perrier Leblanc Barre Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier
Michaud Rodriguez Guichard Gillet Etienne Grondin Poulain Tessier Chevallier Collin Chauvin Da_Silva
Bouchet Gay Lemaitre Benard Marechal Humbert Reynaud Antoine Hoarau Perret Barthelemy Cordier
Pichon Lejeune Gilbert Lamy Delaunay Pasquier Carlier Laporte Smith Johnson Williams Brown Jones
Miller Davis Wilson Anderson Taylor Moore Jackson White Harris Thompson Clark Lewis Walker Hall
Allen Young King Wright Scott Green Baker Nelson Hill Campbell Mitchell Roberts Carter Phillips
Evans Turner Torres Parker Collins Edwards Stewart Morris Murphy Cook Rogers Morgan Peterson
Cooper Reed Bailey Bell Gomez Kelly Howard Ward Cox Diaz Richardson Wood Watson Brooks Bennett
Gray James Reyes Cruz Hughes Price Myers Long Foster Sanders Ross Morales Powell Sullivan Russell
Ortiz Jenkins Gutierrez Perry Butler Barnes Fisher Henderson Coleman Simmons Patterson Jordan
Reynolds Hamilton Graham Kim Gonzales Alexander Ramos Wallace Griffin West Cole Hayes Chavez
Gibson Bryant Ellis Stevens Murray Ford Marshall Owens McDonald Harrison Ruiz Kennedy Wells
Alvarez Woods Mendoza Castillo Olson Webb Washington Tucker Freeman Burns Henry Vasquez Snyder
"""
GIVEN_MALE = """
Jean Pierre Michel Andre Philippe Rene Louis Alain Jacques Bernard Marcel Daniel Roger Robert Paul
Claude Christian Henri Georges Nicolas Francois Patrick Gerard Christophe Joseph Julien Eric
Laurent Frederic Stephane David Pascal Thomas Olivier Sebastien Antoine Alexandre Maxime Hugo
Lucas Leo Gabriel Arthur Jules Raphael Adam Louis Noah Ethan Nathan Mathis James John William
Michael Richard Charles Joseph Thomas Daniel Matthew Anthony Mark Steven Kevin Brian George
""".split()
GIVEN_FEMALE = """
Marie Jeanne Francoise Monique Catherine Nathalie Isabelle Jacqueline Anne Sylvie Martine
Madeleine Nicole Suzanne Helene Christine Marguerite Denise Louise Christiane Yvonne Valerie
Sophie Sandrine Stephanie Celine Julie Aurelie Emilie Camille Lea Manon Chloe Emma Ines Jade
Louise Alice Lina Rose Anna Mila Ambre Julia Mary Patricia Jennifer Linda Elizabeth Barbara
Susan Jessica Sarah Karen Lisa Nancy Betty Margaret Sandra Ashley Emily Donna Michelle
""".split()


def _unique(words: list[str]) -> list[str]:
    return list(dict.fromkeys(words))


SURNAME_LIST = _unique([w.replace("_", " ") for w in SURNAMES.split()])
GIVEN_MALE = _unique(GIVEN_MALE)
GIVEN_FEMALE = _unique(GIVEN_FEMALE)


def _weights(n: int) -> list[float]:
    return [1 / (rank**0.5) for rank in range(1, n + 1)]


def _rewrite_refs(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite_refs(v, targets) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in targets:
            out["reference"] = targets[ref]
        return out
    if isinstance(value, list):
        return [_rewrite_refs(v, targets) for v in value]
    return value


def _bundle_resources(path: Path) -> list[Resource]:
    bundle = orjson.loads(path.read_bytes())
    entries = bundle.get("entry", [])
    targets = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if "fullUrl" in e and "id" in e.get("resource", {})
    }
    return [_rewrite_refs(e["resource"], targets) for e in entries]


@dataclass
class Template:
    """One patient bundle, split for cloning: literal text, id slots and date slots."""

    name: str
    parts: list[str]
    id_slots: list[tuple[int, int]]  # (part index, local id number)
    date_slots: list[tuple[int, int]]  # (part index, proleptic ordinal of the date)
    n_ids: int
    n_resources: int
    patient_index: int
    gender: str
    types: list[str]


def _template(name: str, resources: list[Resource]) -> Template:
    local = {r["id"]: n for n, r in enumerate(resources)}
    text = orjson.dumps(resources).decode()
    parts: list[str] = []
    id_slots: list[tuple[int, int]] = []
    date_slots: list[tuple[int, int]] = []
    last = 0
    for m in _TOKEN.finditer(text):
        if m.group("uuid") is not None:
            number = local.get(m.group("uuid"))
            if number is None:
                continue  # shared resource or a uuid that is no id: kept as is
            parts.append(text[last:m.start()])
            id_slots.append((len(parts), number))
        else:
            try:
                ordinal = date.fromisoformat(m.group("date")).toordinal()
            except ValueError:
                continue
            parts.append(text[last:m.start()])
            date_slots.append((len(parts), ordinal))
        parts.append("")
        last = m.end()
    parts.append(text[last:])
    patient_index = next(i for i, r in enumerate(resources) if r["resourceType"] == "Patient")
    return Template(
        name, parts, id_slots, date_slots, len(resources), len(resources), patient_index,
        resources[patient_index].get("gender", "unknown"), [r["resourceType"] for r in resources],
    )


@dataclass
class Sample:
    """The Synthea sample: shared reference data, the original patient bundles, templates."""

    shared: list[Resource]
    originals: list[list[Resource]]
    templates: list[Template]


def load_sample(directory: Path = SYNTHEA) -> Sample:
    shared: dict[tuple[str, str], Resource] = {}
    originals: list[list[Resource]] = []
    templates: list[Template] = []
    for path in sorted(directory.glob("*.json")):
        resources = _bundle_resources(path)
        local = []
        for r in resources:
            if r["resourceType"] in SHARED_TYPES:
                shared.setdefault((r["resourceType"], r["id"]), r)
            else:
                local.append(r)
        if any(r["resourceType"] == "Patient" for r in local):
            originals.append(local)
            templates.append(_template(path.stem, local))
    return Sample(list(shared.values()), originals, templates)


_DATES: dict[int, str] = {}


def _date_text(ordinal: int) -> str:
    text = _DATES.get(ordinal)
    if text is None:
        text = _DATES[ordinal] = date.fromordinal(ordinal).isoformat()
    return text


def _nir(rng: random.Random, gender: str, birth: str | None) -> str:
    """A well-formed INS-NIR: sex, yy, mm, department, commune, order, then the 97-key."""
    sex = "2" if gender == "female" else "1"
    yy, mm = (birth[2:4], birth[5:7]) if birth else ("00", "01")
    dept = f"{rng.randint(1, 95):02d}"
    body = f"{sex}{yy}{mm}{dept}{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    return f"{body}{97 - int(body) % 97:02d}"


class Cloner:
    """Makes clones of the templates, deterministically from `seed`."""

    def __init__(self, sample: Sample, seed: int = 20240501) -> None:
        self.sample = sample
        self.rng = random.Random(seed)
        self._surname_weights = _weights(len(SURNAME_LIST))
        self._male_weights = _weights(len(GIVEN_MALE))
        self._female_weights = _weights(len(GIVEN_FEMALE))

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def clone(self, template: Template, number: int) -> list[Resource]:
        """Clone `number` of `template`: a list of resources with fresh ids, names and dates."""
        rng = self.rng
        ids = [self._uuid() for _ in range(template.n_ids)]
        shift = rng.randint(_MIN_SHIFT_DAYS, _MAX_SHIFT_DAYS)
        parts = template.parts.copy()
        for index, local in template.id_slots:
            parts[index] = ids[local]
        for index, ordinal in template.date_slots:
            parts[index] = _date_text(ordinal + shift)
        resources: list[Resource] = orjson.loads("".join(parts))
        self._person(resources[template.patient_index], number)
        return resources

    def _person(self, patient: Resource, number: int) -> None:
        rng = self.rng
        gender = patient.get("gender", "unknown")
        if gender == "female":
            given = rng.choices(GIVEN_FEMALE, self._female_weights, k=2)
        else:
            given = rng.choices(GIVEN_MALE, self._male_weights, k=2)
        family = rng.choices(SURNAME_LIST, self._surname_weights)[0]
        givens = given[:1] if rng.random() < 0.7 else list(dict.fromkeys(given))
        patient["name"] = [{"use": "official", "family": family, "given": givens}]
        if gender == "female" and rng.random() < 0.3:
            maiden = rng.choices(SURNAME_LIST, self._surname_weights)[0]
            patient["name"].append({"use": "maiden", "family": maiden, "given": givens})
        mrn = self._uuid()
        patient["identifier"] = [
            {"system": "https://github.com/synthetichealth/synthea", "value": mrn},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "MR", "display": "Medical Record Number"}]},
                "system": "http://hospital.smarthealthit.org",
                "value": f"MRN-{number:07d}",
            },
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "SS", "display": "Social Security Number"}]},
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            },
            {
                "type": {"coding": [{"system": "http://interopsante.org/CodeSystem/v2-0203",
                                     "code": "INS-NIR"}]},
                "use": "official",
                "system": INS_NIR,
                "value": _nir(rng, gender, patient.get("birthDate")),
            },
        ]

    def population(self, start: int = 1) -> Iterator[tuple[int, list[Resource]]]:
        """Endless (clone number, resources of one patient), cycling through the templates."""
        number = start
        templates = self.sample.templates
        while True:
            template = templates[number % len(templates)]
            yield number, self.clone(template, number)
            number += 1
