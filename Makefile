# kubechain — `make demo` runs an agent end to end; `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration lint crds bench k8s node image prometheus redis postgres chromium mcp-servers clean help \
        kind-up docker-build kind-load deploy-kuberay deploy deploy-samples deploy-otel deploy-ui undeploy kind-down e2e-kind

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
	@# the development harness (harness/) and bench/ are not in the package: the dev virtualenv sees the checkout
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "kubechain-checkout.pth").write_text("$(CURDIR)\n")'
	touch $@

# etcd (apt) and kube-apiserver/kube-controller-manager (built once from Debian's source, cached in ~/.cache/kubechain)
k8s:
	hack/k8s-binaries.sh >/dev/null

# One real node for the local control plane (harness/node.py): containerd, runc, CNI plugins, buildah from apt;
# kubelet, kube-scheduler and the pause binary built from the same Debian source (one pass with the control plane's
# on a fresh machine, cached: `node` comes before `k8s` in the prerequisites for that); the pause and busybox images
# built here as OCI archives. Running the node needs root (tests/integration/test_tools.py skips without).
node:
	hack/node.sh >/dev/null

# The operator's image without Docker or a registry (hack/image.sh): kuberay/Dockerfile built with buildah on a Ray
# base made from Debian's packages (debootstrap + ray 2.60 from PyPI, built once, cached in ~/.cache/kubechain/images),
# as an OCI archive the image test (tests/integration/test_image.py) loads into a real node. Rebuilt when the
# checkout changes (a couple of minutes); the base takes ~5 more on a fresh machine.
image: $(STAMP)
	PYTHON=$(PY) hack/image.sh >/dev/null

# The Prometheus server the metrics tests query (Debian's package; its service is not started)
# The MCP servers the tests talk to: `mcp-server-time` comes with the dev extras (PyPI); server-everything (npm,
# stdio and streamable HTTP) is installed once into ~/.cache/kubechain/npm (node and npm from apt when missing)
MCP_EVERYTHING_VERSION := 2026.8.31
MCP_NPM := $(HOME)/.cache/kubechain/npm
mcp-servers:
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@grep -qs '"version": "$(MCP_EVERYTHING_VERSION)"' $(MCP_NPM)/node_modules/@modelcontextprotocol/server-everything/package.json || \
	  npm install --silent --no-audit --no-fund --prefix $(MCP_NPM) @modelcontextprotocol/server-everything@$(MCP_EVERYTHING_VERSION)

prometheus:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The Redis a Ray head keeps its GCS tables in, as with the gcs-ft overlay (Debian's package): test_gcs_secrets.py
# starts its own on a free port and reads every key
redis:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

# The PostgreSQL of the external context store (contextStorageRef; Debian's package): harness/postgres.py starts
# its own cluster on a free port as the postgres user and stops it by PID
postgres:
	@[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# The browser the console's tests drive through Playwright (Debian's package: Playwright downloads no browser)
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && S= || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

crds: $(STAMP)
	$(VENV)/bin/kubechain crds --out crds

# The layers (import-linter), and the TaskRun reconciler's exhaustive matches (mypy on the pure core's state machine)
RECONCILER := kubechain/core/reconciler.py kubechain/core/observation.py kubechain/core/effects.py \
              kubechain/core/run_conditions.py
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --follow-imports=silent --ignore-missing-imports --no-error-summary $(RECONCILER)

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

# The suite's files on TEST_WORKERS processes (pytest-xdist, a file at a time), each with a stack of its own (its
# control plane, Ray head, operator and node): most of a test is waiting on a run, so two share the 2 cores well.
# tests/conftest.py orders the files for it. TEST_WORKERS=0 runs them in this process, one after the other.
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

integration: $(STAMP) node image k8s prometheus redis postgres chromium mcp-servers
	$(VENV)/bin/pytest tests/integration -q $(XDIST)

test: $(STAMP) node image k8s prometheus redis postgres chromium mcp-servers lint
	$(VENV)/bin/pytest tests -q $(XDIST)

demo: $(STAMP) k8s
	$(PY) hack/demo.py

bench: $(STAMP) k8s postgres
	$(PY) bench/bench_slice.py
	$(PY) bench/bench_recovery.py
	$(PY) bench/bench_checkpoint.py
	$(PY) bench/bench_store.py
	$(PY) bench/bench_step.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_burst.py
	$(PY) bench/bench_stream.py
	$(PY) bench/bench_outage.py
	$(PY) bench/bench_admission.py
	$(PY) bench/bench_scale.py

# --- Deployment on a real cluster (kind + KubeRay). These need Docker, kind and helm: not on the CI box.
IMAGE        ?= kubechain:dev
KIND_CLUSTER ?= kubechain
KUBERAY_VERSION ?= 1.7.0
OVERLAY      ?= kind

kind-up:
	kind create cluster --name $(KIND_CLUSTER)

docker-build:
	docker build -f kuberay/Dockerfile -t $(IMAGE) .

kind-load: docker-build
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy-kuberay:
	helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && helm repo update kuberay
	helm upgrade --install kuberay-operator kuberay/kuberay-operator --version $(KUBERAY_VERSION) \
	  --namespace kuberay-system --create-namespace --wait

deploy: $(STAMP)
	$(VENV)/bin/kubectl apply -f kuberay/base/namespace.yaml
	$(VENV)/bin/kubectl -n kubechain-system get secret kubechain-ray-token >/dev/null 2>&1 || \
	  $(VENV)/bin/kubectl -n kubechain-system create secret generic kubechain-ray-token \
	    --from-literal=auth_token=$$($(PY) -c 'import secrets; print(secrets.token_hex(32))')
	@# the gcs-ft overlay's Redis password (harmless in the others)
	$(VENV)/bin/kubectl -n kubechain-system get secret kubechain-redis-password >/dev/null 2>&1 || \
	  $(VENV)/bin/kubectl -n kubechain-system create secret generic kubechain-redis-password \
	    --from-literal=password=$$($(PY) -c 'import secrets; print(secrets.token_hex(32))')
	$(VENV)/bin/kubectl apply --server-side -k kuberay/overlays/$(OVERLAY)
	$(VENV)/bin/kubectl -n kubechain-system rollout status deploy/kubechain-operator --timeout=300s

# samples/tools.yaml (a ray tool) and samples/mcp.yaml (a stdio server) need code tools: as the cluster admin,
# opt the samples' namespace in (docs/threat-model.md)
deploy-samples: $(STAMP)
	$(VENV)/bin/kubectl label namespace default kubechain.dev/code-tools=allowed --overwrite
	$(VENV)/bin/kubectl apply -f kuberay/samples-llm.yaml
	$(VENV)/bin/kubectl apply -f samples/demo.yaml
	$(VENV)/bin/kubectl patch llm.v1alpha1.kubechain.dev demo-llm --type merge \
	  -p '{"spec":{"baseURL":"http://kubechain-scripted-llm.kubechain-system.svc:8000/v1"}}'

# The web console beside the operator (kuberay/base/ui.yaml; also in `make deploy`): read-only unless started
# with --allow-actions. Open it with `kubectl -n kubechain-system port-forward svc/kubechain-ui 8090`.
deploy-ui: $(STAMP)
	$(VENV)/bin/kubectl apply -f kuberay/base/namespace.yaml
	$(VENV)/bin/kubectl apply --server-side -k kuberay/overlays/$(OVERLAY) -l app.kubernetes.io/name=kubechain-ui
	$(VENV)/bin/kubectl -n kubechain-system rollout status deploy/kubechain-ui --timeout=300s

# End to end on kind + KubeRay (after kind-up, kind-load, deploy-kuberay, deploy): a container tool runs as a real
# Job on a real kubelet, a Ray-task tool on the RayCluster, driven by the scripted LLM.
TOOLS_SCRIPT := [{"tool_calls":[{"name":"word_count","arguments":{"text":"the quick brown fox"}},{"name":"shout","arguments":{"text":"the quick brown fox"}}]},{"content":"done: {last_tool_result}"}]
e2e-kind: deploy-samples
	$(VENV)/bin/kubectl -n kubechain-system rollout status deploy/kubechain-scripted-llm --timeout=300s
	$(VENV)/bin/kubectl -n kubechain-system exec deploy/kubechain-scripted-llm -- python -c 'import sys, urllib.request as u; \
	  u.urlopen(u.Request("http://127.0.0.1:8000/_scripts/tools-demo", data=sys.argv[1].encode(), method="PUT", \
	  headers={"Content-Type": "application/json"}))' '$(TOOLS_SCRIPT)'
	$(VENV)/bin/kubectl apply -f samples/tools.yaml
	$(VENV)/bin/kubectl wait task/tools-demo --for=jsonpath='{.status.phase}'=Completed --timeout=300s
	$(VENV)/bin/kubectl get taskrun tools-demo-run -o jsonpath='{range .status.toolCallHistory[*]}{.tool}: {.result}{"\n"}{end}'

deploy-otel: $(STAMP)
	$(VENV)/bin/kubectl apply -f kuberay/otel/collector.yaml
	$(VENV)/bin/kubectl -n kubechain-system set env deploy/kubechain-operator \
	  OTEL_EXPORTER_OTLP_ENDPOINT=http://kubechain-otel-collector.kubechain-system.svc:4318

undeploy: $(STAMP)
	-$(VENV)/bin/kubectl delete -f samples/demo.yaml -f kuberay/samples-llm.yaml --ignore-not-found
	-$(VENV)/bin/kubectl delete -k kuberay/overlays/$(OVERLAY) --ignore-not-found
	-$(VENV)/bin/kubectl delete validatingwebhookconfiguration,mutatingwebhookconfiguration kubechain.dev --ignore-not-found

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf .work $(VENV) *.egg-info
