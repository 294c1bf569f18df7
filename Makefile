# orderflow: `make test` runs every module's tests on a real PostgreSQL (a throwaway
# cluster the tests start themselves) and a real Kafka-protocol broker (kfake, in-process),
# then the integration and end-to-end tests again on Apache Kafka itself (test-kafka).

GO ?= go

# Plain `make` lists the targets; `make test` runs them all.
.DEFAULT_GOAL := help
.PHONY: help
help:
	@echo "orderflow: make TARGET (README.md has the table, with how long each takes)"
	@echo "  run           the whole stack on this machine, until Ctrl-C (BROKER=kafka: Apache Kafka)"
	@echo "  test          everything proven, 17 to 21 minutes from a fresh clone"
	@echo "  test-kafka    the integration and end-to-end tests again on Apache Kafka"
	@echo "  test-keycloak the compose stack's Keycloak, as a process, and its tokens"
	@echo "  chaos         load while the stack's parts are killed and cut off (CHAOS_DURATION=3m)"
	@echo "  bench         throughput and latency on each broker (QUICK=1); bench-docs writes them into docs"
	@echo "  up, down, logs  the compose stack (up makes .env first)"
	@echo "  config-docs   docs/configuration.md's table of settings, from the code"
	@echo "  e2e, e2e-compose, dlq, token, lint, schemathesis, chaos-planted"
	@echo "The fast loop: go test ./... in one module (CONTRIBUTING.md)."
# Every module of the workspace, read from go.work: a module that joins it is tested.
MODULES := $(shell $(GO) work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')

.PHONY: test vet deps build modules

# e2e/imagebuild replays the Dockerfile for every image docker-compose.yml builds (docs/compose.md).
# On kfake each end-to-end test has a broker and a stack of its own, and most of its time
# goes to waiting (for a restart, a deadline, a reading), so those that may run four at
# a time do (e2e's parallel); the timeout is the whole package's, with room for a slow
# machine.
test: deps modules vet lint
	@for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) test -count=1 -timeout 15m -parallel 4 ./...) || exit 1; \
	done
	@$(MAKE) --no-print-directory test-kafka
	@$(MAKE) --no-print-directory test-keycloak
	@echo "== Schemathesis against order-service's OpenAPI document, on a devstack"
	@scripts/schemathesis.sh
	@echo "== fuzz: create-order request decoding and validation, 10 s; Prefer header, 5 s; Authorization header, 5 s; consumed records' decoding, 10 s"
	@scripts/fuzz.sh order-service FuzzCreateRequest 10s ./internal/httpapi/
	@scripts/fuzz.sh order-service FuzzPreferWait 5s ./internal/httpapi/
	@scripts/fuzz.sh common-events FuzzAuthorizationHeader 5s ./web/
	@scripts/fuzz.sh common-events FuzzRecordDecoding 10s ./consumer/
	@$(MAKE) --no-print-directory chaos CHAOS_DURATION=60s

# Every module is in go.work, and its go.mod is complete on its own (GOWORK=off go mod tidy).
modules:
	@scripts/check-modules.sh

# The consumer-runner and outbox integration tests and the end-to-end tests on Apache Kafka
# (TEST_BROKER=kafka), less those whose broker does not matter (the compose file, the alert
# rules, bad settings, the doors, the HTTP edge, the scrapes, a blackholed database, a
# hanging provider, bad input, listings, streams, idempotency keys, Prefer: wait, health,
# a database outage, database roles, declines and provider retries, traces, metrics,
# reconciliation's rules),
# which the first pass ran: one
# broker per test package,
# emptied for each test, from the jars scripts/ensure-kafka.sh fetches with Maven the first
# time.
# Needs Java 17+.
.PHONY: test-kafka
test-kafka:
	@echo "== on Apache Kafka $$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)"
	@scripts/ensure-kafka.sh >/dev/null
	@cd common-events && TEST_BROKER=kafka $(GO) test -count=1 -timeout 8m -skip 'TestABlackholed' ./consumer/ ./outbox/
	@cd e2e && TEST_BROKER=kafka $(GO) test -count=1 -timeout 12m \
		-skip 'TestCompose[^K]|TestAlerts|TestBadSettings|TestUnreachable|TestScenarioOnlyTheRightPeopleGetIn|TestEdge|TestScrape|TestLiveness|TestScenarioBadInput|TestScenarioListing|TestScenarioLiveStatus|TestScenarioIdempotencyKey|TestScenarioPreferWait|TestHealthAndReadiness|TestADatabaseOutage|TestStartupEachService|TestAsyncAPIDocument|TestDeclinedCard|TestTransientProviderFailures|TestOneTracePerOrder|TestEveryServiceServesItsMetrics|TestReconciliation' .

# The chaos run (e2e/chaos_test.go): mixed load on a devstack with Apache Kafka as a process
# of its own while every service is killed (SIGKILL) and restarted four times (twice in a
# run under 2 minutes), PostgreSQL restarted immediately, the broker killed and restarted,
# SMTP gone for a while, one service's database and another's broker blackholed
# (CHAOS_SILENT=<database's>,<broker's> names them), and the provider hanging; then the
# promises are checked and a table printed; a failed run keeps the logs and says where
# (CHAOS_LOG_LEVEL=debug adds the Kafka client's lines; CHAOS_FAULTS="provider hangs,postgres"
# injects only those, docs/operations.md). CHAOS_DURATION sets
# how long (default 3m; make test runs 60 s, about 150 s with the build, the broker's
# start, the faults that outlast the 60 s and the checks).
CHAOS_DURATION ?= 3m
.PHONY: chaos
chaos:
	@echo "== chaos run, $(CHAOS_DURATION) of load and faults, then the invariants"
	@scripts/ensure-kafka.sh >/dev/null
	@cd e2e && CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -count=1 -timeout 30m -v -run 'TestChaos$$' .

# The chaos run on a stack built with a planted bug — a payment simulator that ignores
# idempotency keys — must report the double charges (about 75 s; not part of make test).
.PHONY: chaos-planted
chaos-planted:
	@echo "== chaos run on a planted bug: a provider that charges again for every request"
	@scripts/ensure-kafka.sh >/dev/null
	@cd e2e && CHAOS_PLANTED=1 CHAOS_DURATION=40s $(GO) test -count=1 -timeout 30m -v -run 'TestChaosCatchesANonIdempotentProvider' .

# Keycloak, the OpenID Connect provider of docker-compose.yml, as a process: the server
# scripts/ensure-keycloak.sh fetches with Maven the first time, started with the compose
# service's command, environment and realm file; its tokens checked with the services'
# verifier. Needs Java 17+; about 20-35 s warm, 45-65 s the first time.
.PHONY: test-keycloak
test-keycloak:
	@echo "== on Keycloak $$(sed -n 's:.*<keycloak.version>\(.*\)</keycloak.version>.*:\1:p' tools/keycloak/pom.xml)"
	@scripts/ensure-keycloak.sh >/dev/null
	@cd e2e && TEST_KEYCLOAK=1 $(GO) test -count=1 -timeout 6m -run 'TestKeycloak' .

# Schemathesis (pinned in tools/schemathesis, installed into a virtual environment under
# .data) against order-service on a devstack of its own: every check, every phase, stateful
# tests along the document's links.
.PHONY: schemathesis
schemathesis:
	@scripts/schemathesis.sh

vet:
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

# order-service's OpenAPI document, with Redocly CLI's recommended rules, and the event
# contract's AsyncAPI document, with the AsyncAPI parser (both need Node.js and npm).
.PHONY: lint
lint:
	@scripts/lint-openapi.sh
	@scripts/lint-asyncapi.sh

# PostgreSQL server binaries: present, or installed from Debian's packages when root.
deps:
	@scripts/ensure-postgres.sh

build:
	@mkdir -p bin
	@for s in order-service payment-service notification-service; do \
		(cd $$s && $(GO) build -o ../bin/$$s .) || exit 1; \
	done

# The whole stack on this machine, no Docker: broker on :9092, PostgreSQL on :55432,
# order-service :8080, payment-service :8081, notification-service :8082, the development
# token issuer :8090. Ctrl-C stops it. It writes 24-hour tokens to .data/tokens.
# The broker is kfake, embedded; BROKER=kafka make run runs Apache Kafka instead.
.PHONY: run
run: deps
	@mkdir -p .data/bin
	@cd devstack && $(GO) build -o ../.data/bin/devstack ./cmd/devstack
	@exec .data/bin/devstack

# A token the local stack accepts (make run first, once):
#   make token SUB=5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93 SCOPE=orderflow:customer [TTL=8h]
.PHONY: token
token:
	@cd devstack && $(GO) run ./cmd/token -sub "$(SUB)" -scope "$(SCOPE)" -ttl "$(or $(TTL),1h)"

# The operators' dead-letter tool (common-events/cmd/dlq), on the local stack's broker or
# KAFKA_BROKERS: make dlq ARGS=list; ARGS='show TOPIC'; ARGS='replay TOPIC -dry-run'.
# KAFKA_ENV names a file of NAME=value settings to log in with: the principal dlq on
# BROKER=kafka make run (.data/apache-kafka/dlq.env) or on compose (.data/compose/dlq.env).
.PHONY: dlq
dlq:
	@cd common-events && $(if $(KAFKA_ENV),set -a && . $(abspath $(KAFKA_ENV)) && set +a && )$(GO) run ./cmd/dlq $(ARGS)

# Rebuild reconciliation-service's read model by replay on the running devstack (make run):
# the service stopped, its model dropped and replayed from the topics and the provider's
# records, the service started again (docs/reconciliation.md).
.PHONY: reconcile-rebuild
reconcile-rebuild:
	@scripts/reconcile-rebuild.sh

# The end-to-end scenarios alone. Against another stack, with its tokens:
#   E2E_ORDER_URL=http://localhost:8080 E2E_PAYMENT_URL=http://localhost:8081 \
#   E2E_NOTIFICATION_URL=http://localhost:8082 E2E_CUSTOMER_TOKEN=… E2E_CUSTOMER2_TOKEN=… \
#   E2E_OPERATOR_TOKEN=… make e2e
.PHONY: e2e
e2e: deps
	@cd e2e && $(GO) test -count=1 -timeout 8m -run 'TestScenario' -v ./...

# The full stack with Docker (Apache Kafka in KRaft mode, Kafka UI, PostgreSQL, Mailpit).
# All three images come from the one Dockerfile at the root (build argument SERVICE).
# make up first makes what the repository must not hold (devstack/cmd/compose-env): .env
# with a random secret for every password compose asks for, kept once made (0600), and the
# broker's TLS certificate under .data/compose/pki.
# make up-stripe runs payment-service on Stripe's API, against stripe-mock or the Stripe
# test account .env names (docker-compose.stripe.yml).
.PHONY: up up-stripe down logs e2e-compose compose-env
compose-env:
	@cd devstack && $(GO) run ./cmd/compose-env
up: compose-env
	docker compose up --build -d --wait
up-stripe: compose-env
	docker compose -f docker-compose.yml -f docker-compose.stripe.yml up --build -d --wait
down:
	docker compose down
logs:
	docker compose logs -f
# The e2e scenarios against the compose stack (make up first); those that stop or kill
# services need a devstack and are skipped.
e2e-compose:
	@cd e2e && E2E_ORDER_URL=http://localhost:8080 E2E_PAYMENT_URL=http://localhost:8081 \
		E2E_NOTIFICATION_URL=http://localhost:8084 E2E_CUSTOMER_TOKEN=$$(../scripts/compose-token.sh customer) \
		E2E_CUSTOMER2_TOKEN=$$(../scripts/compose-token.sh customer2) E2E_OPERATOR_TOKEN=$$(../scripts/compose-token.sh operator) \
		$(GO) test -count=1 -timeout 8m -run 'TestScenario' -v ./...

# Throughput and latency of the whole pipeline on its own devstack, printed as a table
# and written to .data/bench/latest.json. QUICK=1 for the short version (about 4 minutes; the whole one about 9½).
# config-docs writes docs/configuration.md's table of settings from what the services read
# (e2e/configdoc_test.go holds the page to it).
.PHONY: config-docs
config-docs:
	@cd e2e && out=$$($(GO) test -count=1 -run TestTheConfigurationPageIsTheCodes -update-config-docs . 2>&1) || { echo "$$out"; exit 1; }; echo "docs/configuration.md: the table of settings written from the code"
.PHONY: bench bench-docs
# bench-docs writes the last bench's figures (.data/bench/latest.json), with its commit and
# machine, into docs/performance.md, and its curve into docs/performance.svg.
bench-docs:
	@cd bench && $(GO) run ./cmd/bench docs ../.data/bench/latest.json ../docs/performance.md
bench: deps
	@mkdir -p .data/bench
	@cd bench && BENCH_QUICK=$(QUICK) BENCH_OUT=../.data/bench/latest.json $(GO) run ./cmd/bench
