//go:build linux

package deny

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/ruleset"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// From linux/netfilter/nfnetlink_log.h: a packet message and its attributes.
const (
	nfulnlMsgPacket = 4<<8 | 0 // NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET
	nfulaPayload    = 9
	nfulaPrefix     = 10
	nfulaUID        = 11
)

type batch struct {
	msgs []netlink.Message
	err  error
}

// nflogFeed is an NFLOG group in a fake kernel: configuration requests are
// acknowledged, and each Read gets the next batch sent on feed (or an
// error once ctx ends, as a closed socket would).
func nflogFeed(t *testing.T, ctx context.Context) (*nflog.Listener, chan<- batch) {
	t.Helper()
	feed := make(chan batch)
	c := nltest.Dial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) > 0 {
			return nltest.Error(0, req)
		}
		select {
		case b := <-feed:
			return b.msgs, b.err
		case <-ctx.Done():
			return nil, errors.New("use of closed socket")
		}
	})
	l, err := nflog.ListenConn(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	return l, feed
}

// deniedPacket is what the kernel logs for a rejected TCP connect of uid to dst:port.
func deniedPacket(prefix string, uid uint32, dst [4]byte, port uint16) netlink.Message {
	ip := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, dst[0], dst[1], dst[2], dst[3], 0x9c, 0x40, byte(port >> 8), byte(port)}
	be := binary.BigEndian.AppendUint32(nil, uid)
	return netlink.Message{
		Header: netlink.Header{Type: nfulnlMsgPacket},
		Data: append([]byte{unix.AF_INET, 0, 0, 3}, nltest.MustMarshalAttributes([]netlink.Attribute{
			{Type: nfulaPrefix, Data: append([]byte(prefix), 0)}, {Type: nfulaUID, Data: be}, {Type: nfulaPayload, Data: ip},
		})...),
	}
}

func waitLogs(t *testing.T, logs *observer.ObservedLogs, msg string, n int) []observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := logs.FilterMessage(msg).All()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q entries, want %d; log: %v", len(got), msg, n, logs.All())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Run turns the group's packets into bounded deny events: the first
// packet of a destination at once, its repeats in the window's summary
// (flushed when the daemon stops), packets with another tool's prefix
// ignored; a kernel overrun is counted and survived. Each event is also
// recorded for `egressd denies`.
func TestRunLogsDenies(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, feed := nflogFeed(t, ctx)
	core, logs := observer.New(zapcore.DebugLevel)
	m := metrics.New()
	rec := NewRecent(10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, l, lookup{}, "egressd", time.Hour, zap.New(core), m, rec)
	}()

	ours := deniedPacket(ruleset.LogPrefix("egressd"), 1001, [4]byte{192, 0, 2, 10}, 443)
	feed <- batch{msgs: []netlink.Message{ours, ours, ours, deniedPacket("other-tool: ", 1001, [4]byte{192, 0, 2, 11}, 443)}}
	first := waitLogs(t, logs, "connection denied", 1)[0].ContextMap()
	if first["allowlist"] != "billing" || first["dst"] != "192.0.2.10" || first["dport"] != uint16(443) || first["count"] != int64(1) {
		t.Errorf("first event %v", first)
	}
	feed <- batch{err: unix.ENOBUFS}
	waitLogs(t, logs, "deny log overrun: the kernel dropped NFLOG messages (enforcement is unaffected)", 1)
	feed <- batch{msgs: []netlink.Message{ours}} // still reading after the overrun

	// Every packet of ours is recorded, the four of them in one entry.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		doc, _ := rec.Snapshot(time.Now())
		if len(doc.Entries) == 1 && doc.Entries[0].Count == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorded %+v, want one entry of 4 packets", doc.Entries)
		}
	}
	// Stopping flushes the window: the three repeats in one summary.
	cancel()
	<-done
	sum := waitLogs(t, logs, "connections denied (summary of the window)", 1)[0].ContextMap()
	if sum["count"] != int64(3) || sum["summary"] != true {
		t.Errorf("summary %v, want the 3 packets after the first", sum)
	}
	if n := len(logs.FilterMessage("connection denied").All()); n != 1 {
		t.Errorf("%d first-packet events, want 1 (the other tool's packet is not ours)", n)
	}

	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rr.Body)
	for _, want := range []string{"egressd_nflog_packets_total 5\n", "egressd_nflog_overruns_total 1\n", `egressd_deny_events_total{allowlist="billing"} 2` + "\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Any other read error ends deny events (said once, as an error), not the
// daemon: the kernel rejects whether or not anyone reads the log.
func TestRunStopsOnReadError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, feed := nflogFeed(t, ctx)
	core, logs := observer.New(zapcore.DebugLevel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, l, lookup{}, "egressd", time.Hour, zap.New(core), nil, nil)
	}()
	feed <- batch{err: errors.New("netlink: socket gone")}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still reading after a fatal read error")
	}
	got := logs.FilterField(zap.String("event", "deny_log_failed")).All()
	if len(got) != 1 || got[0].Level != zapcore.ErrorLevel {
		t.Errorf("deny_log_failed entries %v, want one error", got)
	}
}
