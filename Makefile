# teamshare: the two commands a newcomer needs are `make dev` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: dev test prereqs build fmt lint proto k8s unit smoke python-client bench soak fuzz mutants certs clean-dev

## Run the whole stack on this machine (installs what is missing). Ctrl-C stops it.
dev: prereqs
	$(CARGO) build --workspace --all-targets
	deploy/dev.sh

## The whole test suite: formatting, lints, every Rust test against real servers, and the
## grpcurl smoke test of `make dev`'s stack.
test: prereqs fmt lint proto k8s unit smoke

prereqs:
	deploy/install-prereqs.sh

build:
	$(CARGO) build --workspace --all-targets

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The benchmark-only feature (security checks off) is built on its own by `make bench`;
	@# a workspace member that enabled it would switch it on in every ordinary build.
	@if $(CARGO) tree --workspace -e features -i ts-folders -i ts-gateway --prefix none | grep -q 'feature "insecure-bench"'; then \
		echo "a workspace member enables insecure-bench; only make bench may build it"; exit 1; fi

## Protos: buf lint (STANDARD rules) over proto/, and no breaking change (FILE rules: wire,
## JSON and generated-code compatibility, language options included) against the released API.
## The repository has no release tags, so the baseline is a committed image of the protos as
## released (`buf build -o proto/releases/teamshare-0.1.binpb` at that release; a new release
## adds its own file and this line moves to it, old images stay as the record).
proto:
	node_modules/.bin/buf lint
	node_modules/.bin/buf breaking --against proto/releases/teamshare-0.1.binpb

## Kubernetes manifests: each overlay rendered with kubectl kustomize (base, dev, prod, and prod
## with every optional component); every object schema-valid and strict (kubernetes-validate
## for built-in kinds, the CRDs' schemas for cert-manager, Prometheus Operator and External
## Secrets resources: tests/k8s_validate.py); the whole true to the caller table and the pod, scaling, egress,
## identity and secret rules (tests/k8s_check.py); the alert rules accepted by promtool and
## using only metrics and labels the code exports (tests/alerts_check.py). A few seconds.
K8S_RENDERS := base overlays/dev overlays/prod overlays/prod-all
K8S_OUT := target/k8s
k8s:
	@rm -rf $(K8S_OUT) && mkdir -p $(K8S_OUT)
	@set -e; for k in $(K8S_RENDERS); do \
		echo "kubectl kustomize k8s/$$k > $(K8S_OUT)/$$(basename $$k).yaml"; \
		kubectl kustomize k8s/$$k > $(K8S_OUT)/$$(basename $$k).yaml; \
	done
	.venv/bin/python tests/k8s_validate.py $(K8S_OUT) $(K8S_OUT)/*.yaml k8s/examples/*.yaml
	.venv/bin/python tests/k8s_check.py $(K8S_OUT)
	.venv/bin/python tests/alerts_check.py $(K8S_OUT)/prod-all.yaml

# cargo test (not nextest) so that each test binary shares one set of real servers. The
# binaries come first: the end-to-end tests drive teamshare-cli, a binary of another package,
# which `cargo test` alone does not build.
unit:
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --all-targets

# Built with the same features as the tests, so that nothing is compiled twice. The smoke test
# also drives the story through the Python client, whose stubs python-client generates.
smoke: python-client
	$(CARGO) build --workspace --all-targets
	tests/grpcurl_smoke.sh

## The Python client (clients/python): its stubs of the public API, generated with grpcio-tools
## from .venv (not committed), and its offline tests (interceptors, refresh, retries).
python-client: prereqs
	.venv/bin/python clients/python/generate.py
	.venv/bin/python -m unittest discover -s clients/python/tests

## Benchmarks. ts-bench (release) loads the ceilings and the real stack, each service its own
## process, then the reads again on a stack of a benchmark-only build with the security checks
## off (feature insecure-bench: built first and moved aside, so target/release/teamshare is
## always the real one; it refuses to serve without TEAMSHARE_INSECURE_BENCH), and rewrites its
## section of BENCHMARKS.md; BENCH_ARGS passes flags to it (such as
## `--measure-secs 3 --no-scale`; `target/release/ts-bench --help` lists them). Then the
## field-encryption benchmark (criterion), whose figures are copied into BENCHMARKS.md by hand.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BENCH_ARGS ?=
bench: prereqs
	$(CARGO) build --release -p teamshare --features insecure-bench
	mv -f $(TARGET_DIR)/release/teamshare $(TARGET_DIR)/release/teamshare-insecure-bench
	$(CARGO) build --release -p teamshare -p ts-bench
	$(TARGET_DIR)/release/ts-bench --teamshare-bin $(TARGET_DIR)/release/teamshare \
		--insecure-bin $(TARGET_DIR)/release/teamshare-insecure-bench $(BENCH_ARGS)
	$(CARGO) bench -p ts-crypto --bench seal_open

## The soak (RELIABILITY.md): the real stack, each service its own release-built process,
## under the workload at a steady rate for SOAK_ARGS (default: 30 s warm-up, then 180 s at 40
## requests/s from 12 users). Prints requests, errors by code, p50/p99, and each process's
## memory, descriptors and tasks at the start and the end; fails on any unexpected error,
## growth after the warm-up, a missing acknowledged write, or a secret found in MongoDB,
## Redis or a log. Rewrites its section of BENCHMARKS.md (`--no-write` to keep it).
SOAK_ARGS ?=
soak: prereqs
	$(CARGO) build --release -p teamshare -p ts-bench
	$(TARGET_DIR)/release/ts-bench soak --teamshare-bin $(TARGET_DIR)/release/teamshare $(SOAK_ARGS)

## Mutation testing of the security-critical code (not part of `make test`). Files with unit
## tests run against their own package (seconds a mutant); the code only end-to-end tests
## reach runs against the modules of the e2e binary that exercise it (about a minute a mutant
## on two cores: MUTANTS_SHARD=k/n runs every n-th of them). authn.rs and context.rs are in
## both phases; a mutant counts as caught when either phase catches it.
MUTANT_UNIT := crates/ts-folders/src/validate/*.rs crates/ts-contract/src/ids.rs \
	crates/ts-contract/src/tokens.rs crates/ts-stores/src/cache.rs crates/ts-gateway/src/validate.rs \
	crates/ts-gateway/src/authn.rs crates/ts-folders/src/context.rs
MUTANT_E2E := crates/ts-gateway/src/authn.rs crates/ts-gateway/src/ratelimit.rs \
	crates/ts-folders/src/store/members.rs crates/ts-folders/src/context.rs crates/ts-folders/src/store/items.rs \
	crates/ts-invitations/src/service.rs crates/ts-invitations/src/store.rs
E2E_MODULES := tokens:: gateway:: revocation:: edge:: invitations:: managers:: replay:: folders:: \
	authorization:: stale_cache:: cache:: audit_failures::
MUTANTS_SHARD ?= 0/1
mutants: prereqs
	@command -v cargo-mutants >/dev/null 2>&1 || $(CARGO) install --locked cargo-mutants
	$(CARGO) mutants --in-place --no-shuffle $(addprefix -f ,$(MUTANT_UNIT)) -o mutants.out/unit
	$(CARGO) mutants --in-place --no-shuffle $(addprefix -f ,$(MUTANT_E2E)) -o mutants.out/e2e \
		--shard $(MUTANTS_SHARD) --sharding round-robin --test-workspace=true --baseline=skip \
		--timeout 300 --build-timeout 900 -- --test e2e -- $(E2E_MODULES)

## Fuzz the public-facing parsers, FUZZ_SECONDS each, from the seeds in fuzz/corpus (new
## inputs go to fuzz/.corpus). Needs nightly and cargo-fuzz; without them it says so and
## succeeds. Not part of `make test`, which runs the same properties as bounded proptests.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := access_token connection_item envelope page_token public_requests
fuzz:
	@if ! $(CARGO) +nightly fuzz --version >/dev/null 2>&1; then \
		echo "make fuzz: skipped: it needs a nightly toolchain and cargo-fuzz:"; \
		echo "  rustup toolchain install nightly"; \
		echo "  cargo install cargo-fuzz"; \
		exit 0; \
	fi; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/.corpus/$$t; \
		echo "make fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(CARGO) +nightly fuzz run $$t fuzz/.corpus/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## Development certificates into .dev/certs (make dev does this when they are missing).
certs:
	$(CARGO) run -q -p teamshare -- certs --out .dev/certs

## Forget the local stack's data (database, Redis, certificates).
clean-dev:
	rm -rf .dev
