"""The pure core: the TaskRun lifecycle and reconciler, admission order, resolution of references, admission
rules, names and builders of the objects kubechain creates. No I/O (an import-linter contract says so)."""
