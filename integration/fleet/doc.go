// Package fleet is the fleet tier (issue 21): three hosts and a collector as
// systemd-nspawn containers, systemd as PID 1, booted from a cached Debian
// 12 root file system with openssh-server, python3, systemd-journal-remote
// and prometheus (TestRootFSFleet builds it once into
// /var/cache/egressd-systest, keyed by suite and package list). Each
// container has its own network namespace, joined by veth to a bridge in a
// namespace the test creates, on 192.0.2.0/24 (TEST-NET-1); the host's own
// network is never touched. A real ansible-playbook, run in the bridge's
// namespace, reaches the hosts over ssh and applies the collection in
// deploy/ansible with the Debian package built from this tree. The
// collector runs systemd-journal-remote (the hosts' systemd-journal-upload
// forward to it) and Prometheus with deploy/prometheus/egressd.rules.yml,
// scraping the hosts' egressd.
//
// The tests skip when not root or when a tool is missing, and fail instead
// when EGRESSD_REQUIRE_SYSTEM_TESTS=1.
package fleet
