"""The outward FHIR R4 read/search server (issue 19): search parameters, SQL, resources and the capability
statement. Routes are in :mod:`exchange.api.fhir_search`; HAPI FHIR's behaviour is the reference."""
