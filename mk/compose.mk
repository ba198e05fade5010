# Containers: `make up` / `make down` run the stack with docker compose; `make test-compose`
# proves it end to end (part of `make test`). See docs/containers.md.
#   make up WORKERS=8             build the image and start learner, 8 workers, evaluator,
#                                 Prometheus (127.0.0.1:9090) and Grafana (127.0.0.1:3000)
#   make up OFFLINE=1             the same with no registry: base image by debootstrap, wheels
#                                 from wheelhouse/, Prometheus from the host, no Grafana
#   make down                     stop it (checkpoints stay in their volume; VOLUMES=1 drops them)
#   make chaos                    the stack under 10 minutes of scheduled faults (bench/chaos.json)
#   make chaos CHAOS_ARGS='--seconds 180 --seed 2'

WORKERS ?= 8
CHAOS_ARGS ?=
IMAGE ?= a3c-breakout:latest
OFFLINE ?=
COMPOSE ?= docker compose
COMPOSE_FILES := -f docker-compose.yml $(if $(OFFLINE),-f docker-compose.offline.yml)
DEPLOY_SCRIPTS := deploy/scripts

.PHONY: image up down logs test-compose chaos env-example

## Rewrite .env.example from common/config.py (a unit test keeps the two equal).
env-example: setup
	$(BIN)/python deploy/env_example.py

## Build the one image of every role (OFFLINE=1: from a local base image and wheelhouse/).
image:
ifdef OFFLINE
	$(DEPLOY_SCRIPTS)/base-image.sh
	$(DEPLOY_SCRIPTS)/wheelhouse.sh
	docker build --build-arg BASE_IMAGE=a3c-base:bookworm \
		--build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheelhouse" -t $(IMAGE) .
else
	docker build -t $(IMAGE) .
endif

## Start the stack: learner, WORKERS workers, evaluator, Prometheus, Grafana.
up: image
	IMAGE=$(IMAGE) $(COMPOSE) $(COMPOSE_FILES) up -d --no-build --scale worker=$(WORKERS)
	@$(if $(OFFLINE),echo "Grafana    not started (offline: no image)",echo "Grafana    http://127.0.0.1:$${GRAFANA_PORT:-3000}  (anonymous, read-only)")
	@echo "Prometheus http://127.0.0.1:$${PROMETHEUS_PORT:-9090}"
	@echo "Logs       $(COMPOSE) logs -f learner"

## Stop the stack (VOLUMES=1 also deletes checkpoints and metrics).
down:
	$(COMPOSE) $(COMPOSE_FILES) down $(if $(VOLUMES),--volumes) --remove-orphans

logs:
	$(COMPOSE) $(COMPOSE_FILES) logs -f --tail 50

## Prove `docker compose up --scale worker=8` works, from a bare machine (installs what it needs).
## COMPOSE_TEST_ARGS go to its pytest run (e.g. -x, -k restart).
test-compose: setup
	PYTHON=$(abspath $(BIN))/python $(DEPLOY_SCRIPTS)/test-compose.sh $(COMPOSE_TEST_ARGS)

TEST_EXTRA += test-compose

## The test-compose stack under a seeded schedule of faults for 10 minutes (bench/chaos.py):
## kills, stops, partitions, a full disk, Prometheus restarts; writes bench/chaos.json.
chaos: setup
	PYTHON=$(abspath $(BIN))/python $(DEPLOY_SCRIPTS)/chaos.sh $(CHAOS_ARGS)
