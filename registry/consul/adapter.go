package consul

import (
	"errors"
	"fmt"

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

// New implements registry.Options.
func (o *Options) New(env registry.Env) (registry.Registry, error) {
	agent, err := o.client(o.Addr)
	if err != nil {
		return nil, err
	}
	var servers []*api.Client
	for _, s := range o.Servers {
		c, err := o.client(s)
		if err != nil {
			return nil, err
		}
		servers = append(servers, c)
	}
	return New(Config{
		Client: agent, Servers: servers, Service: o.Service, ServiceID: o.ServiceID, MetaKey: o.MetaKey,
		Logger: env.Logger(),
	})
}

func (o *Options) client(addr string) (*api.Client, error) {
	c := api.DefaultConfig()
	c.Address = addr
	if o.Token != "" {
		c.Token = o.Token
	}
	cl, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return cl, nil
}
