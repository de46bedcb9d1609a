#!/usr/bin/env bash
# Unit-test statement coverage of egressd's own packages (make cover).
#
# What it measures: the statements of the daemon's own packages that their
# own unit tests execute (go test -coverprofile, no -coverpkg: a package's
# figure is what its tests reach), run AS AN UNPRIVILEGED USER (nobody), so
# that every test that needs root, a kernel or a namespace skips, as it does
# for a developer who runs `go test ./...` without root. Packages without
# tests count with all their statements uncovered.
#
# Not measured (the exclusions, by import path):
#   cmd/            flags and wiring; reached by integration tests, not unit tests
#   tools/          build and benchmark programs
#   integration/    the integration, real-systemd and fleet tiers
#   deploy          tests of the files operators install; no Go statements
#   internal/testworld internal/netns internal/dnstest internal/systest
#                   test support (namespaces, DNS servers, skip rules, nspawn)
#
# As root it copies the tree (tracked and untracked, not ignored, files) into
# a fresh directory under /run that nobody can write to, vendors the modules
# there from root's module cache (nobody cannot read /root), and runs the
# tests as uid/gid 65534 without supplementary groups, with a private HOME,
# GOCACHE and TMPDIR, no network for the go command (GOPROXY=off) and a
# clean environment (EGRESSD_REQUIRE_SYSTEM_TESTS unset). As any other user
# it runs the tests in place as that user.
#
# Usage: tools/coverage.sh [packages]   (default: all but the exclusions)
#
# Environment:
#   COVER_OUT=file   also keep the merged profile there (go tool cover -html=file)
#   COVER_CACHE=dir  reuse a GOCACHE for nobody between runs (created
#                    0700 nobody:nobody if missing); default: a fresh one
#
# Prints each package's figure (covered/statements) and the total from
# go tool cover -func. Exits non-zero if a test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

exclude='/(cmd|tools|integration)(/|$)|/deploy$|/internal/(testworld|netns|dnstest|systest)(/|$)'
if [ $# -gt 0 ]; then
	# Some packages only (while working on them); the total is theirs.
	mapfile -t pkgs < <(go list "$@" | grep -Ev "$exclude")
else
	mapfile -t pkgs < <(go list ./... | grep -Ev "$exclude")
fi

if [ "$(id -u)" -ne 0 ]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	src=$PWD
	profile=$work/cover.out
	status=0
	go test -count=1 -covermode=set -coverprofile="$profile" "${pkgs[@]}" || status=$?
	cover() { go tool cover "$@"; }
else
	work=$(mktemp -d -p /run egressd-cover.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	chmod 0755 "$work"
	src=$work/src
	mkdir "$src"
	# The working tree as it is (uncommitted changes included), not .git.
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf - | tar -xf - -C "$src"
	# A git work tree of one commit, as a clone is: internal/debpkg's TestDeb
	# packages the tree and asks git describe for the version.
	git -C "$src" init -q
	git -C "$src" add -A
	git -C "$src" -c user.name=coverage -c user.email=coverage@egressd.invalid commit -q -m "coverage snapshot"
	(cd "$src" && GOFLAGS=-mod=mod go mod vendor) # untracked: git describe stays clean
	chown -R root:root "$src"
	chmod -R u+rwX,go+rX,go-w "$src"
	home=$work/home
	install -d -o 65534 -g 65534 -m 0700 "$home" "$home/tmp"
	cache=${COVER_CACHE:-$home/cache}
	[ -d "$cache" ] || install -d -o 65534 -g 65534 -m 0700 "$cache"
	profile=$home/cover.out
	asnobody() {
		(cd "$src" && setpriv --reuid=65534 --regid=65534 --clear-groups \
			env -i PATH="$PATH" HOME="$home" TMPDIR="$home/tmp" GOCACHE="$cache" \
			GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off \
			GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$src" \
			"$@")
	}
	status=0
	asnobody go test -count=1 -covermode=set -coverprofile="$profile" "${pkgs[@]}" || status=$?
	cover() { asnobody go tool cover "$@"; }
fi

if [ ! -s "$profile" ]; then
	echo "coverage: no profile written" >&2
	exit 1
fi

echo
echo "== statements covered by unit tests as uid $( [ "$(id -u)" -ne 0 ] && id -u || echo 65534), per package"
# A profile line: file:start.col,end.col statements count.
awk 'NR > 1 {
	file = $1; sub(/:[^:]*$/, "", file)
	pkg = file; sub(/\/[^\/]*$/, "", pkg)
	stmts[pkg] += $2
	if ($3 > 0) hit[pkg] += $2
}
END {
	for (p in stmts) printf "%-55s %6.1f%%  %5d/%-5d  uncovered %5d\n", p, 100 * hit[p] / stmts[p], hit[p], stmts[p], stmts[p] - hit[p]
}' "$profile" | sort
echo
cover -func="$profile" | tail -1
if [ -n "${COVER_OUT:-}" ]; then
	cp "$profile" "$COVER_OUT"
fi
exit "$status"
