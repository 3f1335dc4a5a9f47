# SensorFleet — the two commands a newcomer needs:
#
#   make up     build and run the whole platform on this machine (http://127.0.0.1:8080/)
#   make test   install what the tests need (idempotently) and run every test suite
#
# Everything downloaded or built is cached outside the clone, under $(CACHE), so a rerun
# is fast and a fresh machine still gets everything from nothing.

CACHE ?= $(or $(SENSORFLEET_CACHE),/var/cache/sensorfleet)
export CARGO_TARGET_DIR ?= $(CACHE)/target
export npm_config_cache ?= $(CACHE)/npm
# Cases per property test (model/tests/payload_properties.rs, backends' influx
# properties): bounded for a test run; a long run sets more (BENCHMARKS.md).
export PROPTEST_CASES ?= 4096
BIN := $(CARGO_TARGET_DIR)/release/sensorfleet
# The contract test (tests/api_contract.rs) runs this schemathesis.
export SENSORFLEET_SCHEMATHESIS ?= $(shell scripts/install-schemathesis --path)
SHELL := /bin/bash

.PHONY: up test deps services build unit browser browser-run lint fmt bench openapi chart-crds image help

help:
	@grep -E "^#   |^## " Makefile | sed -E "s/^#+ */  /"

## deps: Debian packages (mosquitto-clients, chromium, …), the browser test's npm packages
## and schemathesis (PyPI, for the API contract test).
deps:
	scripts/install-deps base
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	scripts/install-schemathesis

## services: the real services the backend integration tests use (scripts/testenv;
## idempotent: what already answers is left alone). kube is a Kubernetes control plane
## built from Go modules the first time (20-40 minutes on 2 cores, then cached); node is
## one real node for it (kubelet, kube-scheduler, kube-proxy from the same modules,
## containerd and runc from Debian; about 2 more minutes the first time), where
## tests/cluster.rs runs the chart's pods (README, "Run on a local node"). mosquitto's
## dynamic-security listener (port 1884) is what operator/tests/identity.rs provisions.
services:
	scripts/testenv up postgres redis mosquitto kafka influxdb kube node

## build: the release binary.
build:
	cargo build --release --locked

## up: run the platform with the built-in example fleet.
up: build
	$(BIN) up

## unit: every Rust test (pure units, the shared backend suites against the real
## services, the end-to-end tests). `testenv env` exports the services' URLs; plain
## `cargo test` without them skips those suites, or fails them when CI is set.
unit: services
	eval "$$(scripts/testenv env)" && cargo test --release --locked --workspace --no-fail-fast

## browser: headless Chromium loads the dashboard and sees live data arrive.
browser: build browser-run

browser-run:
	SENSORFLEET_BIN=$(BIN) SENSORFLEET_TEST_OUTPUT=$(CURDIR)/tests/output node --test tests/browser/

## test: everything, from a fresh machine. `cargo test` also builds the binary the
## browser test drives, so the release build happens once (a separate `cargo build`
## resolves dependency features without the dev-dependencies and would build twice).
test: deps services unit browser-run

## lint: formatting and clippy, as CI of a reviewer would run them.
lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## openapi: regenerate api/openapi.json after changing the API types.
openapi:
	SENSORFLEET_BLESS=1 cargo test --release --locked -p sensorfleet-api openapi

## chart-crds: copy the generated CRDs (crds/, written by `sensorfleet crdgen --out crds/`)
## into the Helm chart, which installs them; tests/chart.rs fails while the two differ.
chart-crds:
	@ls crds/*.yaml >/dev/null 2>&1 || { echo "crds/ holds no CRDs: run sensorfleet crdgen --out crds/ first" >&2; exit 1; }
	rm -f charts/sensorfleet/crds/*.yaml
	cp crds/*.yaml charts/sensorfleet/crds/

## image: the container image the chart and the kind guide use (Dockerfile).
IMAGE ?= sensorfleet:0.1.0
image:
	docker build -t $(IMAGE) .

## bench: the benchmark BENCHMARKS.md records.
bench: build
	$(BIN) bench
