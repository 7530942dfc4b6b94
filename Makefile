# slotbridge developer entry points.
#
#   make run     build (release), start a local 3+3 Redis Cluster on
#                BASE_PORT.. (default 7000) and run the proxy on 127.0.0.1:6380
#   make test    install redis if needed, then fmt check, clippy, cargo test
#   make bench   run benches/load.sh if present
#   make fmt     format the code
#   make lint    fmt check + clippy

CARGO ?= cargo
BASE_PORT ?= 7000
TEST_THREADS ?= 2

.PHONY: run test bench fmt lint ensure-redis

ensure-redis:
	bash scripts/ensure-redis.sh

run:
	BASE_PORT=$(BASE_PORT) bash scripts/run-local.sh

test: ensure-redis
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test -- --test-threads=$(TEST_THREADS)

bench:
	bash benches/load.sh
	NO_BUILD=1 bash benches/colocate.sh

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Fuzzing with cargo-fuzz (libFuzzer). The checks are in fuzz/checks.rs;
# `cargo test --test fuzz_smoke` runs the same checks deterministically.
#
#   make fuzz                                   every target, FUZZ_SECONDS each,
#                                               one after another (one core)
#   make fuzz FUZZ_TARGETS=route_split FUZZ_SECONDS=60
#
# Install cargo-fuzz once with:  cargo install cargo-fuzz --locked
# It runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (it passes -Z flags
# such as -Zsanitizer=address). New inputs are written to fuzz/work/<target>
# (git-ignored); the seeds in fuzz/corpus/<target> are only read. A crash
# stops the run and leaves its input in fuzz/artifacts/<target>/; minimise it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> <file>`, then add it to
# fuzz/corpus/<target>/ and as a named case in tests/fuzz_smoke.rs.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= request_parser frame_scanner route_split merge_replies config_parse reply_handling

.PHONY: fuzz

fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"; exit 1; }
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t; \
		echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t fuzz/work/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS); \
	done
