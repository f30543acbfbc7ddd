"""The FHIR R4 (4.0.1) resource types and the logical id rule.

Resource types: resourcelist.html; the authority is the official R4 JSON schema shipped in
`data/fhir.schema.json.gz` (its `discriminator.mapping`). The names are spelled out here rather
than read from that 3 MB file at import, so importing this module does no I/O;
`tests/model/test_types.py` fails if the two ever differ.
"""

from __future__ import annotations

import re
from typing import Final

RESOURCE_TYPES: Final[frozenset[str]] = frozenset((
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
    "AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
    "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
    "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
    "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition", "Composition",
    "ConceptMap", "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition", "DeviceMetric",
    "DeviceRequest", "DeviceUseStatement", "DiagnosticReport", "DocumentManifest",
    "DocumentReference", "EffectEvidenceSynthesis", "Encounter", "Endpoint", "EnrollmentRequest",
    "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceVariable",
    "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal",
    "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService", "ImagingStudy",
    "Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
    "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
    "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "MessageDefinition", "MessageHeader",
    "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation", "ObservationDefinition",
    "OperationDefinition", "OperationOutcome", "Organization", "OrganizationAffiliation",
    "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition",
    "Practitioner", "PractitionerRole", "Procedure", "Provenance", "Questionnaire",
    "QuestionnaireResponse", "RelatedPerson", "RequestGroup", "ResearchDefinition",
    "ResearchElementDefinition", "ResearchStudy", "ResearchSubject", "RiskAssessment",
    "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest", "Slot", "Specimen",
    "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription", "Substance",
    "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
    "SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport",
    "TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
))  # fmt: skip

# Types of FHIR R4B (4.3.0) that R4 does not have. A client sending one probably speaks R4B
# or R5, so errors name the version instead of just "unknown".
R4B_ONLY_TYPES: Final[frozenset[str]] = frozenset((
    "AdministrableProductDefinition", "Citation", "ClinicalUseDefinition", "EvidenceReport",
    "Ingredient", "ManufacturedItemDefinition", "MedicinalProductDefinition", "NutritionProduct",
    "PackagedProductDefinition", "RegulatedAuthorization", "SubscriptionStatus",
    "SubscriptionTopic", "SubstanceDefinition",
))  # fmt: skip

# datatypes.html#id; the same pattern as `definitions.id` in the R4 JSON schema.
ID_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def is_resource_type(name: str) -> bool:
    """True if `name` is a concrete FHIR R4 resource type (case-sensitive, as in JSON)."""
    return name in RESOURCE_TYPES


def is_valid_id(s: str) -> bool:
    """True if `s` is a valid logical id: 1-64 of A-Z, a-z, 0-9, '-' and '.', and not "." or
    "..": R4's pattern allows them, but as path segments (RFC 3986 §5.2.4) clients and proxies
    remove them, so a resource with such an id could not be addressed."""
    # fullmatch, not match: "abc\n" or "a b" must fail, and `$` would accept a trailing newline.
    return ID_PATTERN.fullmatch(s) is not None and s not in (".", "..")
