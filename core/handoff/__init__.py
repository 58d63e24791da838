"""Hand-off of a read film: the one-page PDF report and the FHIR R4 bundle, from one gathered content."""
