# pbxbridge build targets. `go run ./cmd/pbxbridge demo` and `go test ./...` need none of this.
# Releases are tagged vX.Y.Z; untagged builds get 0.1.0~git<commit> (a valid Debian version).
VERSION    ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null || echo 0.1.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
ARCH       ?= amd64
LDFLAGS    := -s -w -X main.version=$(VERSION) -X github.com/pbxbridge/pbxbridge/licensing.buildTime=$(BUILD_TIME)
NFPM       := go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.0
DIST       := dist

.PHONY: all build test test-slow race lint ci ci-long deb bench fault clean

all: build

# A position-independent executable (ASLR; Debian's default) with no library dependency.
build:
	CGO_ENABLED=0 GOARCH=$(ARCH) go build -trimpath -buildmode=pie -ldflags '$(LDFLAGS)' -o $(DIST)/pbxbridge ./cmd/pbxbridge

# The test tiers (DEVELOPERS.md, Checks): quick is plain go test; PBXBRIDGE_TESTS=slow adds the
# slow tier (what CI runs), PBXBRIDGE_TESTS=long the long one (.ci/run-long).
test:
	go test ./...

test-slow:
	PBXBRIDGE_TESTS=slow go test ./...

race:
	go test -race ./...

lint:
	golangci-lint run ./...

ci:
	bash .ci/run

ci-long:
	bash .ci/run-long

# A Debian package: binary in /usr/bin, unit in /lib/systemd/system, the sample config as a
# conffile in /etc/pbxbridge, the system user created by postinst (systemd/nfpm.yaml), the man page
# and bash completion generated from the command line, the changelog and the copyright file
# (every Go module compiled in, with its licence). Install it with: apt install ./dist/pbxbridge_*.deb
deb: build
	rm -rf $(DIST)/deb $(DIST)/pbxbridge_*.deb && mkdir -p $(DIST)/deb
	go run -ldflags '-X main.version=$(VERSION)' ./cmd/pbxbridge man | gzip -9n > $(DIST)/deb/pbxbridge.1.gz
	go run ./cmd/pbxbridge completion bash > $(DIST)/deb/pbxbridge.bash-completion
	bash systemd/deb/changelog.sh $(patsubst v%,%,$(VERSION)) | gzip -9n > $(DIST)/deb/changelog.gz
	bash systemd/deb/copyright.sh > $(DIST)/deb/copyright
	VERSION=$(patsubst v%,%,$(VERSION)) ARCH=$(ARCH) $(NFPM) package --config systemd/nfpm.yaml --packager deb --target $(DIST)/

# Every figure of BENCHMARKS.md: the component benchmarks, then the load harness (a simulated
# PBX and fake CRMs driving the daemon as a subprocess; about 10 minutes). Run on a quiet machine.
bench:
	go test -run '^$$' -bench . -benchtime 2s ./connector/outbox/ ./connector/callmodel/ ./connector/replay/ ./asterisk/ami/ ./asterisk/numbers/
	go run ./cmd/loadtest

# The full fault suite (20 kills, AMI drops every 10 s for 2 minutes, a 60 s CRM outage, ...): the
# long tier of the fault and crash tests. The short form is in the slow tier (make test-slow, CI).
# The disk-full test needs root (it mounts a tmpfs) and is skipped otherwise; the kills against
# FreePBX's cdr table need mariadb-server (PBXBRIDGE_REQUIRE_MARIADB=0 skips them without it).
fault:
	PBXBRIDGE_TESTS=long PBXBRIDGE_REQUIRE_MARIADB=$${PBXBRIDGE_REQUIRE_MARIADB:-1} go test -count=1 -timeout 60m -v -run 'TestFault|TestCrash' ./connector/...

clean:
	rm -rf $(DIST)
