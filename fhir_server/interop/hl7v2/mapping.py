"""The mapping engine: reads the declarative maps of mappings/hl7v2/ (checked against
mappings/schema/hl7v2-mapping.schema.json when loaded) and turns a message into resources.

Four kinds of file (mappings/README.md): `datatypes` (composite v2 types -> FHIR types, built
from the primitives of datatypes.py), `vocabulary` (v2 tables -> FHIR codes), `segment`
(fields -> one resource's elements) and `message` (which segments of a message structure
become which resources, and how they refer to each other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema_rs
import orjson

from . import datatypes, paths
from .message import Message, Node, Segment, first
from .problems import Code, Location, error, rejected

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"  # a link to the top-level mappings/
SCHEMA = "schema/hl7v2-mapping.schema.json"
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9")
PROCESSING_IDS = ("P",)  # production only: test and debug messages do not belong in this store

Rule = dict[str, Any]


class MappingFileError(Exception):
    """A mapping file that is malformed or names something that does not exist."""


@dataclass
class Instance:
    """One resource a message gives: from which rule and segment, and its Bundle fullUrl."""

    name: str
    rule: Rule
    segment: Segment
    position: int  # of the segment in the message
    resource: dict[str, Any]
    full_url: str = field(default_factory=lambda: f"urn:uuid:{uuid4()}")


@dataclass(frozen=True)
class Mappings:
    """The loaded maps; `instances(message)` applies them."""

    datatypes: dict[str, Rule]
    vocabulary: dict[str, dict[str, Any]]
    segments: dict[str, Rule]
    messages: dict[tuple[str, str], Rule]  # (message type, event) -> message map
    timezone: str

    @cached_property
    def primitives(self) -> dict[str, Callable[[list[str]], object]]:
        return datatypes.primitives(self.timezone, self.vocabulary["assigning-authority"])

    def message_map(self, message: Message) -> Rule:
        """The map of `message`'s type and event; AR for what this receiver does not take."""
        header = message.header
        msh9 = Location("MSH", 1, 9)
        if header.version not in VERSIONS:
            raise rejected(Code.UNSUPPORTED_VERSION, f"HL7 version '{header.version[:10]}' is not "
                           f"supported ({', '.join(VERSIONS)}).", Location("MSH", 1, 12))
        if header.processing_id not in PROCESSING_IDS:
            raise rejected(Code.UNSUPPORTED_PROCESSING_ID, f"Processing id '{header.processing_id[:5]}'"
                           " is not accepted: production messages (P) only.", Location("MSH", 1, 11))
        if not any(type_ == header.message_type for type_, _ in self.messages):
            raise rejected(Code.UNSUPPORTED_MESSAGE_TYPE, f"Message type '{header.message_type[:10]}' "
                           "is not supported.", Location("MSH", 1, 9, 1))
        found = self.messages.get((header.message_type, header.event))
        if found is None:
            raise rejected(Code.UNSUPPORTED_EVENT, f"Trigger event '{header.event[:10]}' of "
                           f"{header.message_type} is not supported.", Location("MSH", 1, 9, 2))
        structure = found["events"][header.event]
        if header.structure and header.structure != structure:
            raise rejected(Code.UNSUPPORTED_EVENT, f"{header.message_type}^{header.event} comes with "
                           f"the structure {structure}, not {header.structure[:10]}.", msh9)
        return found

    def instances(self, message: Message) -> list[Instance]:
        """The resources `message` gives, references between them set; Refused if it cannot."""
        plan = self.message_map(message)
        convert = _Converter(self, message)
        made: list[Instance] = []
        for rule in plan["resources"]:
            made.extend(self._instances_of(rule, message, convert, made))
        for instance in made:
            for element, name in instance.rule.get("references", {}).items():
                target = nearest(made, name, instance.position)
                if target is not None:
                    paths.put(instance.resource, element, {"reference": target.full_url})
            for element, name in instance.rule.get("collect", {}).items():
                for child in made:
                    parent = child.rule.get("parent")
                    if child.name == name and parent and nearest(made, parent, child.position) is instance:
                        paths.put(instance.resource, element, {"reference": child.full_url})
        return made

    def _instances_of(self, rule: Rule, message: Message, convert: _Converter,
                      made: list[Instance]) -> Iterator[Instance]:
        segment_map = self.segments[rule["map"]]
        found = [(i, s) for i, s in enumerate(message.segments) if s.id == rule["segment"]]
        if not found and not rule.get("optional"):
            raise error(Code.SEGMENT_SEQUENCE, f"The {rule['segment']} segment is missing.",
                        Location(rule["segment"]))
        for position, segment in found if rule.get("repeats") else found[:1]:
            identity = [r["field"] for r in segment_map["fields"] if r.get("target") == "identifier[]"]
            if rule.get("optional") and not any(segment.field(f) for f in identity):
                continue
            resource = convert.segment(segment_map, segment)
            fixed = {**rule.get("set", {}), **rule.get("set_for", {}).get(message.header.event, {})}
            for element, value in fixed.items():
                paths.put(resource, element, value)
            derive = rule.get("derive_identifier")
            if not resource.get("identifier") and derive:
                parent = nearest(made, derive["from"], position)
                own = segment.field(derive["field"])
                if parent is not None and parent.resource.get("identifier") and own:
                    base = parent.resource["identifier"][0]
                    resource["identifier"] = [{**base, "value": f"{base['value']}-{first(own[0])}"}]
            if not resource.get("identifier"):
                raise error(Code.REQUIRED_FIELD_MISSING, f"{segment.location(identity[0] if identity else None)}"
                            " gives no identifier: the resource cannot be matched.",
                            segment.location(identity[0] if identity else None))
            yield Instance(rule["name"], rule, segment, position, resource)


def _chosen(only: Rule, repetition: Node) -> bool:
    """Whether a repetition's component `only["component"]` is (or is not) in the list."""
    components = repetition if isinstance(repetition, list) else [repetition]
    index = only["component"] - 1
    value = first(components[index]).strip() if index < len(components) else ""
    return value in only["in"] if "in" in only else value not in only["not_in"]


def nearest(made: list[Instance], name: str, position: int) -> Instance | None:
    """The instance `name` closest before `position`, else the first one."""
    named = [i for i in made if i.name == name]
    before = [i for i in named if i.position < position]
    return before[-1] if before else named[0] if named else None


class _Converter:
    """Applies segment and datatype maps to one message's fields."""

    def __init__(self, mappings: Mappings, message: Message) -> None:
        self.mappings = mappings
        self.message = message
        self.primitives = mappings.primitives

    def segment(self, segment_map: Rule, segment: Segment) -> dict[str, Any]:
        resource: dict[str, Any] = {"resourceType": segment_map["resource"]}
        for rule in segment_map["fields"]:
            source = segment
            if "segment" in rule:
                others = self.message.all(rule["segment"])
                if not others:
                    continue
                source = others[0]
            if not self._applies(rule.get("when"), source):
                continue
            if "value" in rule:
                paths.put(resource, rule["target"], rule["value"])
                continue
            repetitions = source.field(rule["field"])
            location = source.location(rule["field"])
            if not repetitions and rule.get("required"):
                raise error(Code.REQUIRED_FIELD_MISSING, f"{location} is required.", location)
            if "only" in rule:
                repetitions = [r for r in repetitions if _chosen(rule["only"], r)]
            for repetition in repetitions if rule.get("repeats") else repetitions[:1]:
                value = self.value(rule, repetition, location)
                if value is None and rule.get("required"):
                    raise error(Code.REQUIRED_FIELD_MISSING, f"{location} is required.", location)
                if value is not None and "target" in rule:
                    paths.put(resource, rule["target"], value)
        return resource

    def _applies(self, when: Rule | None, segment: Segment) -> bool:
        if when is None:
            return True
        present = segment.field(when["field"])
        if "present" in when:
            return bool(present) is when["present"]
        return bool(present) and first(present[0]).strip() in when["in"]

    def value(self, rule: Rule, node: Node, location: Location) -> Any:
        """The FHIR value of `node` by the rule's datatype, through its vocabulary if any."""
        value = self.convert(rule["datatype"], node, location)
        name = rule.get("vocabulary")
        if name is None or value is None:
            return value
        mapped = self.mappings.vocabulary[name].get(str(value))
        if mapped is None and rule.get("unmapped", "error") == "error":
            raise error(Code.TABLE_VALUE_NOT_FOUND, f"{location}: '{str(value)[:30]}' is not a "
                        f"known code ({name}).", location)
        return mapped

    def convert(self, datatype: str, node: Node, location: Location) -> Any:
        primitive = self.primitives.get(datatype)
        if primitive is not None:
            parts = [self.message.unescape(first(p)) for p in node] if isinstance(node, list) else [
                self.message.unescape(node)]
            try:
                return primitive(parts)
            except ValueError as exc:
                raise error(Code.DATA_TYPE, f"{location}: {exc}.", location) from None
        components: list[Node] = node if isinstance(node, list) else [node]
        built: dict[str, Any] = {}
        for rule in self.mappings.datatypes[datatype]["components"]:
            start = rule["component"] - 1
            where = Location(location.segment, location.occurrence, location.field, rule["component"])
            part: Node
            if "span" in rule:
                spanned: list[Node] = [first(c) for c in components[start:start + rule["span"]]]
                part = spanned
            elif start < len(components):
                part = components[start]
            else:
                part = ""
            value = self.value(rule, part, where)
            if value is None and rule.get("required") and first(components).strip():
                raise error(Code.REQUIRED_FIELD_MISSING, f"{where} is missing or unknown.", where)
            if value is not None:
                paths.put(built, rule["target"], value)
        return built or None


def load(directory: Path = MAPPINGS) -> Mappings:
    """Read and check the maps under `directory`/hl7v2; MappingFileError names the file."""
    validator = jsonschema_rs.validator_for(orjson.loads((directory / SCHEMA).read_bytes()))
    kinds: dict[str, list[tuple[Path, Rule]]] = {}
    for path in sorted((directory / "hl7v2").rglob("*.json")):
        try:
            content = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise MappingFileError(f"{path}: not JSON ({exc})") from None
        problems = [f"{e.message} at /{'/'.join(map(str, e.instance_path))}"
                    for e in validator.iter_errors(content)]
        if problems:
            raise MappingFileError(f"{path}: {problems[0]}")
        kinds.setdefault(content["kind"], []).append((path, content))
    try:
        [(_, types)] = kinds["datatypes"]
        [(_, vocabulary)] = kinds["vocabulary"]
    except (KeyError, ValueError):
        raise MappingFileError(f"{directory}: needs exactly one datatypes and one vocabulary file") from None
    mappings = Mappings(
        datatypes=types["datatypes"], vocabulary=vocabulary["maps"],
        segments={path.stem: content for path, content in kinds.get("segment", [])},
        messages=_by_event(kinds.get("message", [])),
        timezone=types["default_timezone"])
    _check_names(mappings, kinds)
    return mappings


def _by_event(files: list[tuple[Path, Rule]]) -> dict[tuple[str, str], Rule]:
    """The message maps by (message type, trigger event); a trigger mapped twice is an error."""
    found: dict[tuple[str, str], Rule] = {}
    for path, content in files:
        for event in content["events"]:
            if (content["type"], event) in found:
                raise MappingFileError(f"{path}: {content['type']}^{event} is mapped twice")
            found[(content["type"], event)] = content
    return found


def _check_names(mappings: Mappings, kinds: dict[str, list[tuple[Path, Rule]]]) -> None:
    """Every datatype, vocabulary, segment map and resource name a file uses exists."""
    known = set(mappings.primitives) | set(mappings.datatypes)
    if "assigning-authority" not in mappings.vocabulary:
        raise MappingFileError("vocabulary: the assigning-authority map is missing")

    def check_rules(path: Path, rules: list[Rule]) -> None:
        for rule in rules:
            if "datatype" in rule and rule["datatype"] not in known:
                raise MappingFileError(f"{path}: unknown datatype {rule['datatype']}")
            if "vocabulary" in rule and rule["vocabulary"] not in mappings.vocabulary:
                raise MappingFileError(f"{path}: unknown vocabulary {rule['vocabulary']}")
            if "target" in rule:
                paths.steps(rule["target"])

    for path, content in kinds["datatypes"]:
        for definition in content["datatypes"].values():
            check_rules(path, definition["components"])
    for path, content in kinds.get("segment", []):
        if path.stem != content["segment"]:
            raise MappingFileError(f"{path}: a segment map is named after its segment")
        check_rules(path, content["fields"])
    for path, content in kinds.get("message", []):
        names = {r["name"] for r in content["resources"]}
        for rule in content["resources"]:
            if rule["map"] not in mappings.segments:
                raise MappingFileError(f"{path}: no segment map {rule['map']}")
            used = [*rule.get("references", {}).values(), *rule.get("collect", {}).values(),
                    *[rule[k] for k in ("parent", "merge_into") if k in rule],
                    *([rule["derive_identifier"]["from"]] if "derive_identifier" in rule else [])]
            if unknown := set(used) - names:
                raise MappingFileError(f"{path}: {rule['name']} names no resource {sorted(unknown)}")
