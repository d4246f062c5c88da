package prestop

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/graceful"
)

// The admin contract, against the real graceful library: drain, then read traffic.
func TestAppAdminAgainstGraceful(t *testing.T) {
	srv, err := graceful.New(graceful.Config{
		Servers:   []*http.Server{{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}},
		AdminAddr: "127.0.0.1:0", Signals: []os.Signal{},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	defer func() {
		srv.Shutdown()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// Run starts asynchronously.
	gomega.NewWithT(t).Eventually(srv.State).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(gomega.Equal(graceful.Running))
	app := NewAppAdmin("http://" + srv.AdminAddr())
	if resp, err := http.Get("http://" + srv.Addrs()[0] + "/work"); err == nil {
		resp.Body.Close()
	}
	ctx := context.Background()
	st, err := app.Drain(ctx)
	if err != nil || st.State != "draining" {
		t.Fatalf("Drain = %+v, %v", st, err)
	}
	st, err = app.Status(ctx)
	if err != nil || st.RequestsTotal != 1 || st.LastRequest == "" || st.InFlight != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if app.Port() == 0 {
		t.Error("admin port not parsed")
	}
}
