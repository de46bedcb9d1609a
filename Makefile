# Everything here is also runnable as plain go commands; see README.md.
GO ?= go

.PHONY: build test race lint fuzz bench demo ci

build:
	$(GO) build -o egressd ./cmd/egressd

test:
	$(GO) test ./...

race:
	$(GO) test -race ./...

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt: $$bad"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test ./config -run XXX -fuzz FuzzParseAllowlist -fuzztime 30s
	$(GO) test ./config -run XXX -fuzz FuzzParseEntry -fuzztime 30s

# The whole-process comparisons (needs root; installs dig, nft and dnsperf if
# missing), then the Go micro-benchmarks. See docs/performance.md.
bench:
	@command -v dig >/dev/null && command -v nft >/dev/null && command -v dnsperf >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils nftables dnsperf >/dev/null)
	$(GO) run ./tools/bench
	$(GO) test ./ruleset ./resolver -run XXX -bench . -benchmem -benchtime 5x

demo:
	$(GO) run ./cmd/egressd demo

ci:
	bash .ci/run
