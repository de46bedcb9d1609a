module github.com/google/nftables

go 1.21

require (
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42
	golang.org/x/sys v0.28.0
)
