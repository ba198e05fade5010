# Kubernetes manifests (k8s/, docs/kubernetes.md): render every kustomization and validate it
# offline, since no cluster runs here: strict Kubernetes 1.32 schemas, the project's policies,
# and the monitoring files (promtool). Part of `make test`.

K8S_TOOLS := build/k8s-tools
# promtool from PATH, else from Debian's prometheus package, unpacked (not installed: no root
# needed once apt's lists exist, and no Prometheus service gets started).
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),$(K8S_TOOLS)/promtool)
# checkov (the generic pod checks, k8s/checkov_policy.py) in a venv of its own: it pins many
# libraries of its own, which must not meet the project's.
CHECKOV_VERSION := 3.3.30
CHECKOV ?= $(K8S_TOOLS)/checkov/bin/checkov

.PHONY: k8s-validate

k8s-validate: setup $(PROMTOOL) $(CHECKOV)
	@command -v kubectl >/dev/null || { echo "k8s-validate needs kubectl (kustomize is built in)" >&2; exit 1; }
	$(BIN)/python k8s/validate.py --promtool $(PROMTOOL) --checkov $(CHECKOV)

$(K8S_TOOLS)/promtool:
	mkdir -p $(K8S_TOOLS)
	cd $(K8S_TOOLS) && { apt-get download prometheus 2>/dev/null \
		|| { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb --fsys-tarfile $(K8S_TOOLS)/prometheus_*.deb | tar -xO ./usr/bin/promtool >$@.tmp
	chmod +x $@.tmp && mv $@.tmp $@ && rm -f $(K8S_TOOLS)/prometheus_*.deb

$(K8S_TOOLS)/checkov/bin/checkov:
	$(PYTHON) -m venv $(K8S_TOOLS)/checkov
	$(K8S_TOOLS)/checkov/bin/python -m pip install -q --disable-pip-version-check \
		checkov==$(CHECKOV_VERSION)

# The suite's own k8s tests run checkov too.
test: $(CHECKOV)

TEST_EXTRA += k8s-validate
