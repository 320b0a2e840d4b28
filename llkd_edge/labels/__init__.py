"""The label stage: labelling texts through the store, label budgets and their active rounds, gold labels and the probes that read them."""
