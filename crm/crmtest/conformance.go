// Package crmtest is for tests only: the conformance suite every CRM adapter must pass (Run)
// and helpers that serve the fake CRMs of crm/fakecrm on httptest servers. Nothing in the
// shipped binary imports it.
package crmtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/call"
	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// Harness connects the conformance suite to one adapter type and its fake. The suite's cases
// run in parallel (t.Parallel), each with its own adapter and fake: New and Record are called
// concurrently from different tests.
type Harness struct {
	// New builds a fresh adapter talking to a fresh, authorised fake; it returns the adapter and
	// a controller for that fake. Cleanup goes through t.Cleanup.
	New func(t *testing.T) (crm.Adapter, Controller)
	// Record returns the i-th test record for the adapter New built for the same t: an answered
	// inbound call from a known customer to a mapped extension, with a unique call id.
	Record func(t *testing.T, i int) *call.Record
}

// Controller drives the fake behind an adapter.
type Controller interface {
	// Inject makes the fake misbehave as f from now on (fakecrm.FaultNone restores it).
	Inject(f fakecrm.Fault)
	// Logged reports how many times the call with this record key appears in the CRM (a
	// correct adapter makes it exactly once, however often it is delivered).
	Logged(key string) int
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	t.Run("deliver", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		rec := h.Record(t, 1)
		if err := a.Deliver(context.Background(), rec); err != nil {
			t.Fatalf("deliver: %v", err)
		}
		if n := c.Logged(rec.Key()); n != 1 {
			t.Fatalf("call appears %d times in the CRM, want 1", n)
		}
	})
	t.Run("idempotent redelivery", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		rec := h.Record(t, 2)
		for i := range 3 {
			if err := a.Deliver(context.Background(), rec); err != nil {
				t.Fatalf("delivery %d: %v", i+1, err)
			}
		}
		if n := c.Logged(rec.Key()); n != 1 {
			t.Fatalf("call delivered 3 times appears %d times in the CRM, want 1", n)
		}
	})
	t.Run("expired token is refreshed", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		c.Inject(fakecrm.FaultUnauthorized)
		rec := h.Record(t, 3)
		if err := a.Deliver(context.Background(), rec); err != nil {
			t.Fatalf("deliver with an expired token: %v", err)
		}
		if n := c.Logged(rec.Key()); n != 1 {
			t.Fatalf("call appears %d times, want 1", n)
		}
	})
	t.Run("revoked authorisation", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		c.Inject(fakecrm.FaultRevoked)
		rec := h.Record(t, 4)
		wantClass(t, a.Deliver(context.Background(), rec), crm.ClassAuth)
		if n := c.Logged(rec.Key()); n != 0 {
			t.Fatalf("call appears %d times, want 0", n)
		}
	})
	t.Run("rate limited", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		c.Inject(fakecrm.FaultRateLimited)
		err := a.Deliver(context.Background(), h.Record(t, 5))
		wantClass(t, err, crm.ClassRateLimited)
	})
	t.Run("server error is transient", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		c.Inject(fakecrm.FaultServerError)
		wantClass(t, a.Deliver(context.Background(), h.Record(t, 6)), crm.ClassTransient)
		c.Inject(fakecrm.FaultNone)
		rec := h.Record(t, 6)
		if err := a.Deliver(context.Background(), rec); err != nil {
			t.Fatalf("deliver after the outage: %v", err)
		}
		if n := c.Logged(rec.Key()); n != 1 {
			t.Fatalf("call appears %d times after a failed and a good delivery, want 1", n)
		}
	})
	t.Run("timeout is transient", func(t *testing.T) {
		t.Parallel()
		a, c := h.New(t)
		c.Inject(fakecrm.FaultSlow)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := a.Deliver(ctx, h.Record(t, 7))
		wantClass(t, err, crm.ClassTransient)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("deliver ignored its deadline: returned after %v", d)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		t.Parallel()
		a, _ := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := a.Deliver(ctx, h.Record(t, 8))
		if err == nil {
			t.Fatal("deliver with a cancelled context succeeded")
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v does not wrap context.Canceled", err)
		}
	})
}

func wantClass(t *testing.T, err error, want crm.Class) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want a %s error", want)
	}
	if got, _ := crm.Classify(err); got != want {
		t.Fatalf("error %q classified %s, want %s", err, got, want)
	}
	if want == crm.ClassRateLimited {
		if _, d := crm.Classify(err); d < 0 {
			t.Fatalf("negative retry-after %v", d)
		}
	}
	_ = fmt.Sprint(err) // errors must print without panicking
}

// StartBitrix24 serves a new fake Bitrix24 on an httptest server closed at the end of the test.
func StartBitrix24(tb testing.TB, opts ...fakecrm.Bitrix24Option) *fakecrm.Bitrix24 {
	tb.Helper()
	f := fakecrm.NewBitrix24(opts...)
	srv := httptest.NewServer(f)
	tb.Cleanup(srv.Close)
	f.SetBaseURL(srv.URL)
	return f
}

// BoxedBitrix24 is a fake boxed Bitrix24 portal served over HTTPS (StartBoxedBitrix24).
type BoxedBitrix24 struct {
	*fakecrm.Bitrix24
	// CAFile is the PEM file to trust the portal by (tls.ca_file): the private CA that issued
	// its certificate, or the self-signed certificate itself.
	CAFile string
	// Cert is the portal's certificate.
	Cert *x509.Certificate
}

// StartBoxedBitrix24 serves a fake boxed portal (fakecrm.B24Boxed, then opts) over HTTPS with a
// certificate for 127.0.0.1 and localhost issued by a private CA, whose certificate is written
// to a PEM file in a temporary directory. Its cloud OAuth server is unreachable.
func StartBoxedBitrix24(tb testing.TB, opts ...fakecrm.Bitrix24Option) *BoxedBitrix24 {
	tb.Helper()
	ca, err := fakecrm.NewPrivateCA("Romashka LLC internal CA")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := ca.Issue("127.0.0.1", "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	return startBoxed(tb, cert, ca.PEM, opts)
}

// StartSelfSignedBitrix24 is StartBoxedBitrix24 with a self-signed certificate (as `openssl req
// -x509` makes one) instead of a private CA's: CAFile is that certificate.
func StartSelfSignedBitrix24(tb testing.TB, opts ...fakecrm.Bitrix24Option) *BoxedBitrix24 {
	tb.Helper()
	cert, certPEM, err := fakecrm.SelfSignedCert("127.0.0.1", "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	return startBoxed(tb, cert, certPEM, opts)
}

func startBoxed(tb testing.TB, cert tls.Certificate, trustPEM []byte, opts []fakecrm.Bitrix24Option) *BoxedBitrix24 {
	tb.Helper()
	caFile := filepath.Join(tb.TempDir(), "portal-ca.pem")
	if err := os.WriteFile(caFile, trustPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	f := fakecrm.NewBitrix24(append([]fakecrm.Bitrix24Option{fakecrm.B24Boxed()}, opts...)...)
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests are about
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	f.SetBaseURL(srv.URL)
	return &BoxedBitrix24{Bitrix24: f, CAFile: caFile, Cert: cert.Leaf}
}

var (
	_ Controller = (*fakecrm.AmoCRM)(nil)
	_ Controller = (*fakecrm.Bitrix24)(nil)
)
