package consultest

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// One agent for a whole test package: started by the first test that asks, stopped by Main.
var shared struct {
	once  sync.Once
	agent *Agent
	err   error
}

// Main runs a package's tests and then stops the agent Shared started, if any:
//
//	func TestMain(m *testing.M) { consultest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the agent Shared started, if any, for a TestMain that does more than Main.
func StopShared() {
	if shared.agent != nil {
		shared.agent.Close()
	}
}

// Shared returns the package's agent, started at the first call; the package's TestMain must
// call Main. Tests that share it use names of their own. It skips the test without a binary,
// unless RequireEnv is set.
func Shared(t testing.TB) *Agent {
	t.Helper()
	shared.once.Do(func() { shared.agent, shared.err = New() })
	switch {
	case errors.Is(shared.err, ErrNoBinary) && os.Getenv(RequireEnv) != "1":
		t.Skipf("%s is not set: run `make test` for integration tests against a real Consul agent", BinaryEnv)
	case shared.err != nil:
		t.Fatal(shared.err)
	}
	return shared.agent
}
