"""Reimplemented baselines, registered in ``registry.yaml``: simple floors (popular, last-visit repeat, logistic,
MLP) and, in later issues, GAMENet, SafeDrug and MoleRec."""
