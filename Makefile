# One way in: a person and CI use the same targets.
#   make run    build, start a throwaway local registry, run the push check (pass, then a wrong password)
#   make test   wit pins, fmt, clippy and every test (unit, integration against a real registry)
#   make build  release host at target/release/stella-doctor, check components in target/plugins/
#   make bench  side-by-side measurements of the host, a native probe and curl; rewrites BENCHMARKS.md
#   make edge   the push probe as a `wasi:http/proxy` component for Spin and `wasmtime serve`, in target/edge/
# Needs: rustup with the toolchain in rust-toolchain.toml (target added here),
# Debian's docker-registry for run/test (installed here when run as root).

SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGINS_DIR := target/plugins
EDGE_DIR := target/edge
GUEST_PACKAGES := oci-push-check

.PHONY: all setup toolchain registry build guests edge run bench bench-build bench-tools test lint fmt-check clippy test-unit wit-check wit-vendor clean

all: build

## setup: everything build, run and test need, installed when missing.
setup: toolchain registry

toolchain:
	@command -v rustup >/dev/null || { echo "missing: rustup (https://rustup.rs); then run make again" >&2; exit 1; }
	@rustup target add $(WASM_TARGET) >/dev/null 2>&1 || { echo "missing: the $(WASM_TARGET) target; 'rustup target add $(WASM_TARGET)' failed" >&2; exit 1; }

registry:
	@command -v docker-registry >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's docker-registry (distribution 2.8) for the local test registry"; \
	    (apt-get install -y -qq docker-registry >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq docker-registry; }) >/dev/null; \
	  else \
	    echo "missing: docker-registry; install it with 'sudo apt-get install -y docker-registry'" >&2; exit 1; \
	  fi; }
	@command -v docker-registry >/dev/null || { echo "missing: docker-registry, and installing it failed" >&2; exit 1; }

## build: the release host and the size-optimised check components.
build: toolchain guests
	$(CARGO) build --release -p stella-doctor
	@echo "host:    target/release/stella-doctor"
	@echo "plugins: $(PLUGINS_DIR)/"

guests: toolchain
	$(CARGO) build --profile guest-release --target $(WASM_TARGET) $(addprefix -p ,$(GUEST_PACKAGES))
	@mkdir -p $(PLUGINS_DIR)
	@for p in $(GUEST_PACKAGES); do cp target/$(WASM_TARGET)/guest-release/$${p//-/_}.wasm $(PLUGINS_DIR)/$$p.wasm; done

## edge: the push probe for serverless platforms; not a plugin, so not in $(PLUGINS_DIR).
## Two builds of one crate, differing only in the `wasi:config` version they import:
## oci-push-edge.wasm for `wasmtime serve` (48+), oci-push-edge-spin.wasm for Spin 3 and later.
edge: toolchain
	$(CARGO) build --profile guest-release --target $(WASM_TARGET) -p oci-push-edge
	@mkdir -p $(EDGE_DIR)
	@cp target/$(WASM_TARGET)/guest-release/oci_push_edge.wasm $(EDGE_DIR)/oci-push-edge.wasm
	$(CARGO) build --profile guest-release --target $(WASM_TARGET) -p oci-push-edge --features spin
	@cp target/$(WASM_TARGET)/guest-release/oci_push_edge.wasm $(EDGE_DIR)/oci-push-edge-spin.wasm
	@echo "wasmtime serve: $(EDGE_DIR)/oci-push-edge.wasm"
	@echo "spin:           $(EDGE_DIR)/oci-push-edge-spin.wasm (guest/oci-push-edge/spin.toml)"

## bench: the measurements in BENCHMARKS.md, run side by side on this machine (a few minutes);
## prints the tables and rewrites the measured section of BENCHMARKS.md. Needs docker-registry
## and curl (installed here when run as root). `bench-build` is the release build it runs on:
## about 5 minutes the first time on 2 cores (wasmtime with optimisations), seconds after.
BENCH_GUESTS := target/$(WASM_TARGET)/guest-release
BENCH_UNSTRIPPED := target/bench-unstripped

bench: setup bench-tools bench-build
	target/release/doctor-bench \
	  --host target/release/stella-doctor \
	  --native target/release/native-probe \
	  --push $(BENCH_GUESTS)/oci_push_check.wasm \
	  --well-behaved $(BENCH_GUESTS)/well_behaved_check.wasm \
	  --unstripped $(BENCH_UNSTRIPPED)/$(WASM_TARGET)/guest-release/oci_push_check.wasm \
	  --write BENCHMARKS.md

bench-build: toolchain
	$(CARGO) build --profile guest-release --target $(WASM_TARGET) -p oci-push-check -p well-behaved-check
	CARGO_PROFILE_GUEST_RELEASE_STRIP=false $(CARGO) build --profile guest-release --target $(WASM_TARGET) -p oci-push-check --target-dir $(BENCH_UNSTRIPPED)
	$(CARGO) build --release -p stella-doctor -p doctor-bench

bench-tools:
	@command -v curl >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl; }) >/dev/null; \
	  else \
	    echo "missing: curl; install it with 'sudo apt-get install -y curl'" >&2; exit 1; \
	  fi; }

## run: a local demo against a throwaway docker-registry on loopback.
run: setup build
	@scripts/demo.sh target/release/stella-doctor $(PLUGINS_DIR)

## test: what CI runs.
test: setup wit-check lint
	$(CARGO) test --workspace --all-targets

lint: fmt-check clippy

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## wit-check / wit-vendor: the WASI packages under wit/deps/ against wit/deps.lock.
wit-check:
	@scripts/wit-deps.sh check

wit-vendor:
	@scripts/wit-deps.sh vendor

clean:
	$(CARGO) clean
