# fedmesh — `make run` starts the whole mesh; `make test` proves it works.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULES := shared shared/natsembed shared/tracing services/catalog services/health services/router \
           services/nodeagent services/gateway services/fedmesh
PKGS    := $(addprefix ./,$(addsuffix /...,$(MODULES)))
SERVICE_CMDS := catalog health router nodeagent gateway
BIN     := $(CURDIR)/bin
NATS_CLI_VERSION    := v0.5.1
NATS_SERVER_VERSION := v2.15.2
TEST_TIMEOUT ?= 15m
FUZZTIME ?= 20s
RUN_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
BENCH_ROUTING_ARGS ?=

.PHONY: run build test lint unit smoke chaos chaos-short cluster tools bench bench-router bench-routing bench-routing-quick fuzz tidy clean

## run: the whole mesh on an embedded nats-server (127.0.0.1:4222) with 3 demo nodes and the gateway (127.0.0.1:8080)
run:
	@mkdir -p $(BIN)
	go build -o $(BIN)/fedmesh ./services/fedmesh/cmd/fedmesh
	exec $(BIN)/fedmesh dev $(RUN_ARGS)

## build: every binary into ./bin
build:
	@mkdir -p $(BIN)
	go build -o $(BIN)/ ./services/fedmesh/cmd/fedmesh ./services/catalog/cmd/catalog ./services/health/cmd/health \
		./services/router/cmd/router ./services/nodeagent/cmd/nodeagent ./services/gateway/cmd/gateway

## test: formatting, vet, unit + integration tests with -race, and the CLI smoke test
test: lint unit smoke chaos-short

lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)
	@# nats-server is a test-time dependency of the services: none of their programs may link it
	@for c in $(SERVICE_CMDS); do deps=$$(go list -deps ./services/$$c/cmd/$$c); \
	  if [[ "$$deps" == *nats-server* ]]; then echo "services/$$c/cmd/$$c links nats-server"; exit 1; fi; done

unit:
	go test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## smoke: `fedmesh dev` answering the real nats CLI and `fedmesh infer --stream`
smoke: tools build
	PATH="$(BIN):$$PATH" scripts/smoke.sh

## chaos: the fault run (3 nats-servers, 2 of each service, 6 nodes, 24 clients, six faults, ~100 bad inputs), answers checked on the wire; table in chaos.md (≈ 2–3 min)
chaos: tools build
	$(BIN)/fedmesh chaos --bin-dir $(BIN) --out chaos.md $(CHAOS_ARGS)

## chaos-short: the same in ≤ 60 s (part of make test)
chaos-short: tools build
	$(BIN)/fedmesh chaos --short --strict --bin-dir $(BIN) $(CHAOS_ARGS)
	@echo "chaos-short: 1 passed, 0 failed"

## cluster: a real 3-server NATS cluster, every service twice as its own process, nodes on different servers
cluster: tools build
	scripts/cluster.sh

## bench-routing: every routing strategy on 8 simulated servers (3 h100, 3 a10, 2 cpu), 3 workloads × 3 loads, targets of issue 14; tables in bench-routing.md (≈ 6–7 min on 2 cores)
bench-routing: build
	$(BIN)/fedmesh bench-routing --out bench-routing.md $(BENCH_ROUTING_ARGS)

## bench-routing-quick: the same at 90 % load only, 40 s simulated per run (≤ 90 s)
bench-routing-quick: build
	$(BIN)/fedmesh bench-routing --quick --out bench-routing-quick.md $(BENCH_ROUTING_ARGS)

## tools: the nats CLI and a nats-server binary, pinned, into ./bin
tools: $(BIN)/nats $(BIN)/nats-server
$(BIN)/nats:
	GOBIN=$(BIN) go install github.com/nats-io/natscli/nats@$(NATS_CLI_VERSION)
$(BIN)/nats-server:
	GOBIN=$(BIN) go install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

## bench: routed vs raw NATS side by side, streaming, large bodies (8 and 64 MiB vs raw Object Store), route decisions, scale; prints Markdown tables
bench: build
	$(BIN)/fedmesh bench --bin-dir $(BIN) $(BENCH_ARGS)

bench-router:
	cd services/router && go test -run '^$$' -bench 'BenchmarkDecide' -benchmem ./...

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	@for m in $(MODULES); do \
	  for pkg in $$(cd $$m && go list ./...); do \
	    dir=$$(cd $$m && go list -f '{{.Dir}}' $$pkg); \
	    for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	      echo "== $$pkg $$f"; (cd $$dir && go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) .) ; \
	    done; \
	  done; \
	done

tidy:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy); done

clean:
	rm -rf $(BIN)
