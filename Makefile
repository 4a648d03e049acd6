# The two entry points a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup venv toolchain runtime images test unit integration lint demo bench clean-cluster lock

setup: venv toolchain runtime images  ## Python environment, the real toolchain, the container runtime and images (idempotent)

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-runtime.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	bash scripts/step.sh venv python pip $(VENV)/bin/pip install --progress-bar off --disable-pip-version-check \
		-r requirements.txt
	# The `iflearner-operator` command (editable: it runs this checkout's code).
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

toolchain:  ## Build Pulumi, providers, etcd, kube-*, kubelet, kube-proxy, kwok, CoreDNS from Go modules
	bash scripts/build-toolchain.sh

runtime:  ## containerd, runc, CNI plugins, debootstrap, iptables from Debian's packages, when missing
	bash scripts/install-runtime.sh

images: venv toolchain runtime  ## The real node's images (pause, coredns, testapp), built and cached
	$(PY) -m iflearner.images build

test: setup lint  ## ruff, then unit and integration tests (integration uses a real control plane and Pulumi)
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

lint: venv
	$(VENV)/bin/ruff check iflearner tests bench workloads

demo: setup  ## The end-to-end demo on a local cluster
	$(PY) -m iflearner demo

bench: setup  ## Every benchmark of the controller: latency, burst, profile, DNS capacity, 500 jobs, sharding (~35 min)
	$(PY) bench/run.py
	$(PY) bench/run.py --secrets-provider kms
	$(PY) bench/profile_update.py --jobs 3
	$(PY) bench/profile_update.py --jobs 3 --secrets-provider kms
	$(PY) bench/dns_capacity.py
	$(PY) bench/scale.py --jobs 500 --rate 1
	$(PY) bench/scale.py --jobs 100 --rate 1000 --operators 1 2
	$(PY) bench/scale.py --jobs 100 --rate 1000 --operators 1 2 --cpus-per-operator 1
	$(PY) bench/chaos.py --seed 7 --jobs 60 --faults 24

lock: venv  ## Regenerate the images' lock files (every wheel's sha256) after changing a requirements file
	$(PY) scripts/lock-requirements.py

clean-cluster:
	$(PY) -m iflearner cluster down
