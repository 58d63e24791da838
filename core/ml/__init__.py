"""Machine learning at run time: the classifier, the detector, inference, triage, the model files."""
