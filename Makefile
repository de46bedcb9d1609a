# Everything here is also runnable as plain go commands; see README.md.
GO ?= go

.PHONY: build test race lint fuzz bench demo ci deb man cover

# The release as git describes it; egressd version and egressd_build_info show it.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/egressd/egressd/internal/version.Version=$(VERSION) -X github.com/egressd/egressd/internal/version.Commit=$(COMMIT)

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o egressd ./cmd/egressd

# build/egressd_VERSION_ARCH.deb (dpkg-deb; see docs/release.md).
deb:
	$(GO) run ./tools/deb -out build

# The man pages, as the package installs them (build/man).
man:
	mkdir -p build/man
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/egressd man 8 > build/man/egressd.8
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/egressd man 5 > build/man/egressd.yaml.5

test:
	$(GO) test -timeout 30m ./...

# Unit-test statement coverage of the daemon's own packages, the tests run as
# nobody (root-only tiers skip); per package and total. See tools/coverage.sh.
cover:
	bash tools/coverage.sh

race:
	$(GO) test -race ./...

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt: $$bad"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test ./config -run XXX -fuzz FuzzParseAllowlist -fuzztime 30s
	$(GO) test ./config -run XXX -fuzz FuzzParseEntry -fuzztime 30s
	$(GO) test ./internal/conntrack -run XXX -fuzz FuzzParseFlow -fuzztime 30s

# The whole-process comparisons (needs root; installs dig, nft and dnsperf if
# missing), then the Go micro-benchmarks. See docs/performance.md.
bench:
	@command -v dig >/dev/null && command -v nft >/dev/null && command -v dnsperf >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils nftables dnsperf >/dev/null)
	$(GO) run ./tools/bench
	$(GO) test ./ruleset ./resolver -run XXX -bench . -benchmem -benchtime 5x
	$(GO) test ./internal/conntrack ./internal/dnsproxy -run XXX -bench . -benchmem
	$(GO) test ./internal/bindguard -run XXX -bench . -benchtime 20000x

demo:
	$(GO) run ./cmd/egressd demo

ci:
	bash .ci/run
