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
	@if [ -f benches/load.sh ]; then \
		bash benches/load.sh; \
	else \
		echo "benches/load.sh does not exist yet; nothing to run"; \
	fi

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
