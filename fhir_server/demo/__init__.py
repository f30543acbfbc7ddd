"""The small demo data set loaded by `fhir-server serve --demo` into an empty store."""
