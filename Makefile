# kubechain — `make demo` runs an agent end to end; `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration lint crds bench k8s prometheus clean help

help:
	@echo "make demo   run an agent end to end on a local control plane + Ray head + scripted LLM"
	@echo "make test   unit + integration tests (real kube-apiserver, Ray head, operator process)"
	@echo "make crds   regenerate crds/ from the pydantic models"
	@echo "make bench  print the latency numbers (bench/)"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# etcd (apt) and kube-apiserver/kube-controller-manager (built once from Debian's source, cached in ~/.cache/kubechain)
k8s:
	hack/k8s-binaries.sh >/dev/null

# The Prometheus server the metrics tests query (Debian's package; its service is not started)
prometheus:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

crds: $(STAMP)
	$(VENV)/bin/kubechain crds --out crds

lint: $(STAMP)
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

integration: $(STAMP) k8s prometheus
	$(VENV)/bin/pytest tests/integration -q

test: $(STAMP) k8s prometheus lint
	$(VENV)/bin/pytest tests -q

demo: $(STAMP) k8s
	$(PY) hack/demo.py

bench: $(STAMP) k8s
	$(PY) bench/bench_slice.py
	$(PY) bench/bench_recovery.py
	$(PY) bench/bench_checkpoint.py

clean:
	rm -rf .work $(VENV) *.egg-info
