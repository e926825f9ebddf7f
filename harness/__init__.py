"""The development harness: a local kube-apiserver + etcd, a Ray head, Prometheus and an OTLP receiver, for the tests,
`make demo` and the benchmarks. Not part of the product (not in the package or the image)."""
