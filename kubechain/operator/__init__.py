"""The operator: kopf handlers, Kubernetes and Ray I/O, the webhook server, settings. `kubechain.operator.main`
is the kopf entry point."""
