package consul

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// Name is the registry's name in --registries and annotations.
const Name = "consul"

// Adapter is Consul's entry in the adapters table.
func Adapter() registry.Adapter {
	return registry.Adapter{
		Name: Name, PodService: true, Auto: "when a Consul address is set",
		Options: func() registry.Options { return &Options{} },
	}
}

// Options are Consul's settings, the same in lastcall-prestop and lastcall-controller.
type Options struct {
	// Addr is the agent's HTTP address (the pod's agent in lastcall-prestop).
	Addr string
	// Servers are the HTTP addresses of the servers callers read from; Addr when empty.
	Servers []string
	// Service and ServiceID pick the pod's instances (lastcall-prestop only: the controller
	// reads the service from each pod's annotation).
	Service, ServiceID string
	MetaKey            string
	// Token is the ACL token; api.DefaultConfig reads CONSUL_HTTP_TOKEN, CONSUL_CACERT and the
	// other CONSUL_* variables as usual.
	Token string
	// Timeout bounds one request (a blocking query: its wait plus Timeout).
	Timeout time.Duration
	// AgentPort is the HTTP port of the agent on every node, reached at the node's catalog
	// address with Addr's scheme.
	AgentPort int
}

// Vars implements registry.Options.
func (o *Options) Vars(b registry.Binary) []envflag.Var {
	vars := []envflag.Var{
		{Flag: "consul-addr", Env: "LASTCALL_CONSUL_ADDR", Fallback: []string{"CONSUL_HTTP_ADDR"},
			Help: "Consul agent HTTP address, e.g. http://$(HOST_IP):8500; in lastcall-prestop the agent the pod registered with",
			Set:  envflag.String(&o.Addr)},
		{Flag: "consul-servers", Env: "LASTCALL_CONSUL_SERVERS",
			Help: "comma-separated HTTP addresses of the Consul servers callers read from; each must show a change (default: --consul-addr only)",
			Set:  envflag.List(&o.Servers)},
	}
	if b == registry.PreStop {
		vars = append(vars,
			envflag.Var{Flag: "consul-service", Env: "LASTCALL_CONSUL_SERVICE",
				Help: "Consul service name of this pod's instances (default: any service whose instance matches the pod)",
				Set:  envflag.String(&o.Service)},
			envflag.Var{Flag: "consul-service-id", Env: "LASTCALL_CONSUL_SERVICE_ID",
				Help: "explicit Consul service ID to deregister (default: instances whose address is the pod IP or whose meta carries the pod UID)",
				Set:  envflag.String(&o.ServiceID)})
	}
	return append(vars,
		envflag.Var{Flag: "consul-timeout", Env: "LASTCALL_CONSUL_TIMEOUT", Default: DefaultTimeout.String(),
			Help: "longest one Consul request may take (a blocking query: its wait plus this); a failed request, or one answered by anything but Consul, drops the pooled connections so the next one dials and resolves the address again",
			Set:  envflag.PositiveDuration(&o.Timeout)},
		envflag.Var{Flag: "consul-agent-port", Env: "LASTCALL_CONSUL_AGENT_PORT", Default: strconv.Itoa(DefaultAgentPort),
			Help: "HTTP port of the Consul agent on each node, reached at the node's catalog address: an instance another agent registered is removed through that agent, whose anti-entropy would restore it after a catalog removal (the catalog is used when that agent is down or unreachable)",
			Set:  port(&o.AgentPort)},
		envflag.Var{Flag: "consul-meta-key", Env: "LASTCALL_CONSUL_META_KEY", Default: DefaultMetaKey,
			Help: "Consul service meta key that carries the pod UID",
			Set:  envflag.String(&o.MetaKey)},
		envflag.Var{Env: "LASTCALL_CONSUL_TOKEN", Fallback: []string{"CONSUL_HTTP_TOKEN"},
			Help: "Consul ACL token (environment only, so it stays out of process lists)",
			Set:  envflag.String(&o.Token)})
}

// Auto implements registry.Options.
func (o *Options) Auto(registry.Env) bool { return o.Addr != "" }

// Check implements registry.Options.
func (o *Options) Check(env registry.Env) error {
	if o.Addr == "" {
		return errors.New("needs a Consul address: set --consul-addr, LASTCALL_CONSUL_ADDR or CONSUL_HTTP_ADDR")
	}
	if env.Binary == registry.PreStop && o.ServiceID == "" && env.Pod.IP == "" && env.Pod.UID == "" {
		return errors.New("needs POD_IP or POD_UID (--pod-ip, --pod-uid) to find this pod's instances, or --consul-service-id")
	}
	return nil
}

// DefaultAgentPort is Consul's HTTP port.
const DefaultAgentPort = 8500

func port(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return errors.New("want a port number, 1 to 65535")
		}
		*p = n
		return nil
	}
}

// New implements registry.Options.
func (o *Options) New(env registry.Env) (registry.Registry, error) {
	agent, err := o.client(o.Addr, nil)
	if err != nil {
		return nil, err
	}
	var servers []*api.Client
	for _, s := range o.Servers {
		c, err := o.client(s, nil)
		if err != nil {
			return nil, err
		}
		servers = append(servers, c)
	}
	agents, err := o.agents()
	if err != nil {
		return nil, err
	}
	return New(Config{
		Client: agent, Servers: servers, Service: o.Service, ServiceID: o.ServiceID, MetaKey: o.MetaKey,
		Agents: agents, Logger: env.Logger(),
	})
}

// client is a client for addr with its own connection pool, or with the shared one when given.
func (o *Options) client(addr string, shared *transport) (*api.Client, error) {
	c := api.DefaultConfig()
	c.Address = addr
	if o.Token != "" {
		c.Token = o.Token
	}
	rt := shared
	if rt == nil {
		// TLS settings (CONSUL_CACERT, ...) go onto the transport the way api.NewClient does it.
		if _, err := api.NewHttpClient(c.Transport, c.TLSConfig); err != nil {
			return nil, fmt.Errorf("consul client for %s: %w", addr, err)
		}
		rt = newTransport(c.Transport, o.Timeout)
	}
	c.HttpClient = &http.Client{Transport: rt}
	cl, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return cl, nil
}

// agents makes clients for the agents on other nodes, at AgentPort with Addr's scheme, one per
// node address; they share one connection pool, so the number of nodes does not multiply it.
func (o *Options) agents() (func(string) (*api.Client, error), error) {
	c := api.DefaultConfig()
	scheme := c.Scheme // https with CONSUL_HTTP_SSL
	if s, _, ok := strings.Cut(o.Addr, "://"); ok && (s == "http" || s == "https") {
		scheme = s
	}
	if _, err := api.NewHttpClient(c.Transport, c.TLSConfig); err != nil {
		return nil, fmt.Errorf("consul agents' client: %w", err)
	}
	shared := newTransport(c.Transport, o.Timeout)
	var (
		mu      sync.Mutex
		clients = map[string]*api.Client{}
	)
	return func(nodeAddr string) (*api.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		if c := clients[nodeAddr]; c != nil {
			return c, nil
		}
		c, err := o.client(scheme+"://"+net.JoinHostPort(nodeAddr, strconv.Itoa(o.AgentPort)), shared)
		if err != nil {
			return nil, err
		}
		clients[nodeAddr] = c
		return c, nil
	}, nil
}
