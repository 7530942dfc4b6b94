# slotbridge developer entry points.
#
#   make run     build (release), start a local 3+3 Redis Cluster on
#                BASE_PORT.. (default 7000) and run the proxy on 127.0.0.1:6380
#   make test    install redis if needed, then fmt check, clippy, cargo test
#   make bench   end-to-end benchmarks (about 7-9 minutes on 2 cores):
#                benches/load.sh (proxy vs. direct Redis: rps, p50/p99,
#                proxy and backend CPU per request, then the proxy's scaling
#                with clients, pipeline depth, MGET keys and value size),
#                then benches/colocate.sh. ROUNDS, TARGET_SECS, SCALING=0...:
#                see `bash benches/load.sh --help`
#   make bench-memory  benches/memory.sh: proxy RSS with N (10000) idle
#                client connections, after one GET each and after close
#   make bench-reference  benches/reference.sh: slotbridge, twemproxy
#                (Debian's nutcracker, installed if missing) and one Redis
#                side by side in one run (about 4 minutes)
#   make fmt     format the code
#   make lint    fmt check + clippy

CARGO ?= cargo
BASE_PORT ?= 7000
TEST_THREADS ?= 2

.PHONY: run test bench bench-memory bench-reference fmt lint ensure-redis

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

bench-memory:
	bash benches/memory.sh

bench-reference: ensure-redis
	bash benches/reference.sh

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
FUZZ_TARGETS ?= request_parser frame_scanner route_split merge_replies config_parse reply_handling acl_rules

.PHONY: fuzz

fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"; exit 1; }
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t; \
		echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t fuzz/work/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS); \
	done

# Chaos soak (not part of `make test`): mixed load from SOAK_CLIENTS clients
# through the proxy while masters are killed and restarted, slots resharded
# and nodes replaced; a checker verifies every reply and every acknowledged
# write (see examples/soak.rs). Runs twice, SOAK_MINUTES each: without and
# with the [durability] WAIT policy, to show its cost.
SOAK_MINUTES ?= 3
SOAK_CLIENTS ?= 16

.PHONY: soak

soak: ensure-redis
	$(CARGO) build --release --bins --examples
	SLOTBRIDGE_BIN=$(CURDIR)/target/release/slotbridge target/release/examples/soak \
		--minutes $(SOAK_MINUTES) --clients $(SOAK_CLIENTS)
	SLOTBRIDGE_BIN=$(CURDIR)/target/release/slotbridge target/release/examples/soak \
		--minutes $(SOAK_MINUTES) --clients $(SOAK_CLIENTS) --wait-replicas 1

# redis-py's own test suite against one Redis and against the proxy (not
# part of `make test`; downloads redis-py from PyPI). PROTOCOL=3 for RESP3.
.PHONY: client-suite

client-suite: ensure-redis
	tools/client-suite.sh

# Redis's own test suite (Tcl, external-server mode) against one Redis and
# against the proxy (not part of `make test`; downloads the Redis source
# package with apt-get source, needs tclsh).
.PHONY: redis-suite

redis-suite: ensure-redis
	tools/redis-suite.sh
