package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/iptables"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/kubeproxy"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// config is everything lastcall-node is told, after flags, env and defaults.
type config struct {
	listen, node, mode, kubeProxyURL string
	agent                            agent.Config
	handler                          agent.HandlerConfig
	tokenFile, nft                   string
	maxChainReads                    int
	logFormat                        string
	logLevel                         slog.Level
	showVersion                      bool
}

// Default listen address: on the node's network, where lastcall-controller calls it (its
// --dataplane-agent-port).
const defaultListen = ":9902"

func (c *config) vars() []envflag.Var {
	a := &c.agent
	return []envflag.Var{
		{Flag: "listen", Env: "LASTCALL_LISTEN", Default: defaultListen, Help: "address of the API (/v1/wait, /v1/check), /healthz, /livez and /metrics; with hostNetwork, on the node's addresses", Set: envflag.String(&c.listen)},
		{Flag: "node-name", Env: "NODE_NAME", Help: "this node's name, named in answers (downward API spec.nodeName)", Set: envflag.String(&c.node)},
		{Flag: "mode", Env: "LASTCALL_MODE", Default: kubeproxy.ModeAuto, Help: "kube-proxy mode to read: auto (ask kube-proxy's /proxyMode; if it cannot be reached, the mode whose rules are present), iptables or nftables", Set: envflag.OneOf(&c.mode, kubeproxy.ModeAuto, kubeproxy.ModeIPTables, kubeproxy.ModeNFTables)},
		{Flag: "kube-proxy-metrics", Env: "LASTCALL_KUBE_PROXY_METRICS", Default: "http://127.0.0.1:10249", Help: "kube-proxy's metrics address (its --metrics-bind-address): its sync timestamps say when to re-read the ruleset; \"\" reads every --fallback-interval instead", Set: envflag.URL(&c.kubeProxyURL)},
		{Flag: "sync-poll", Env: "LASTCALL_SYNC_POLL", Default: agent.DefaultSyncPoll.String(), Help: "how often kube-proxy's metrics are read while waits are open", Set: envflag.PositiveDuration(&a.SyncPoll)},
		{Flag: "recheck", Env: "LASTCALL_RECHECK", Default: agent.DefaultRecheck.String(), Help: "longest time between ruleset reads while waits are open, whatever kube-proxy's metrics say", Set: envflag.PositiveDuration(&a.Recheck)},
		{Flag: "fallback-interval", Env: "LASTCALL_FALLBACK_INTERVAL", Default: agent.DefaultFallback.String(), Help: "time between ruleset reads while kube-proxy's metrics cannot be read, and before a failed read is retried", Set: envflag.PositiveDuration(&a.Fallback)},
		{Flag: "min-gap", Env: "LASTCALL_MIN_GAP", Default: agent.DefaultMinGap.String(), Help: "least pause between two ruleset reads (the pause is also at least as long as the last read took)", Set: envflag.PositiveDuration(&a.MinGap)},
		{Flag: "health-interval", Env: "LASTCALL_HEALTH_INTERVAL", Default: agent.DefaultHealth.String(), Help: "how often an idle agent checks that it can read the ruleset (for /healthz)", Set: envflag.PositiveDuration(&a.Health)},
		{Flag: "read-timeout", Env: "LASTCALL_READ_TIMEOUT", Default: agent.DefaultReadTimeout.String(), Help: "longest time one ruleset read may take", Set: envflag.PositiveDuration(&a.ReadTimeout)},
		{Flag: "max-chain-reads", Env: "LASTCALL_MAX_CHAIN_READS", Default: fmt.Sprint(iptables.DefaultMaxChainReads), Help: "most chains one targeted read may list (iptables-nft -S: about 2 ms each; nftables mode, through netlink: well under 1 ms); beyond, the whole table is read", Set: envflag.Int(&c.maxChainReads, 1)},
		{Flag: "max-waits", Env: "LASTCALL_MAX_WAITS", Default: fmt.Sprint(agent.DefaultMaxWaits), Help: "most open waits and checks; more are answered 429", Set: envflag.Int(&a.MaxWaits, 1)},
		{Flag: "max-ips", Env: "LASTCALL_MAX_IPS", Default: fmt.Sprint(agent.DefaultMaxIPs), Help: "most IPs the open waits may ask about together; more are answered 429", Set: envflag.Int(&a.MaxIPs, 1)},
		{Flag: "default-timeout", Env: "LASTCALL_DEFAULT_TIMEOUT", Default: agent.DefaultWaitTimeout.String(), Help: "timeout of a wait that gives none", Set: envflag.PositiveDuration(&c.handler.DefaultTimeout)},
		{Flag: "max-timeout", Env: "LASTCALL_MAX_TIMEOUT", Default: agent.DefaultMaxTimeout.String(), Help: "longest timeout a wait may ask for", Set: envflag.PositiveDuration(&c.handler.MaxTimeout)},
		{Flag: "token-file", Env: "LASTCALL_TOKEN_FILE", Help: "file holding a bearer token that /v1/ requests must carry (a Secret shared with lastcall-controller); empty: no authentication", Set: envflag.String(&c.tokenFile)},
		{Flag: "nft", Env: "LASTCALL_NFT", Default: "nft", Help: "the nft command (nftables mode); iptables commands are found in PATH", Set: envflag.String(&c.nft)},
		{Flag: "log-format", Env: "LASTCALL_LOG_FORMAT", Default: "json", Help: "log format: json or text", Set: envflag.OneOf(&c.logFormat, "json", "text")},
		{Flag: "log-level", Env: "LASTCALL_LOG_LEVEL", Default: "info", Help: "log level: debug (a line per ruleset read), info, warn or error", Set: c.setLevel},
	}
}

func (c *config) setLevel(v string) error {
	if err := c.logLevel.UnmarshalText([]byte(v)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

// parse reads args, then env through getenv, then defaults. --help writes usage and returns
// flag.ErrHelp; other errors are one line naming the flag and its variable.
func parse(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("lastcall-node", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bound := envflag.Bind(fs, c.vars())
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	help := fs.Bool("help", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) { // -h
			return c, fmt.Errorf("%w (see --help)", err)
		}
		*help = true
	}
	if *help {
		writeUsage(usage, bound)
		return c, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: lastcall-node takes only flags (see --help)", fs.Arg(0))
	}
	if err := bound.Apply(getenv); err != nil {
		return c, err
	}
	c.agent.Node = c.node
	if c.handler.DefaultTimeout > c.handler.MaxTimeout {
		return c, fmt.Errorf("--default-timeout %s is more than --max-timeout %s", c.handler.DefaultTimeout, c.handler.MaxTimeout)
	}
	return c, nil
}

// token reads the bearer token file, if any.
func (c config) token() (string, error) {
	if c.tokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("--token-file / LASTCALL_TOKEN_FILE: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file / LASTCALL_TOKEN_FILE: %s is empty: put the token in it or leave the setting unset", c.tokenFile)
	}
	return tok, nil
}

func writeUsage(w io.Writer, bound *envflag.Bound) {
	fmt.Fprint(w, `lastcall-node: per-node dataplane confirmation for lastcall. It answers lastcall-controller's
question "does this node's dataplane still send new connections to these draining pod IPs?" by
reading the rules kube-proxy programmed (iptables or nftables mode), re-reading them after each
kube-proxy sync. It never writes to the dataplane and never calls the Kubernetes API.

Usage: lastcall-node [flags]

API (JSON): POST /v1/wait (long poll), POST /v1/check, GET /v1/check?ip=IP; also /healthz (fails
while the ruleset cannot be read), /livez and /metrics.
Needs: hostNetwork, root with CAP_NET_ADMIN (and CAP_NET_RAW for legacy iptables), the
iptables and nft commands in PATH.

Each flag can also be set by the environment variable shown; a flag wins over the env var.

`)
	bound.Usage(w)
}

func (c config) window() time.Duration {
	// A wait can last --max-timeout; a check two reads and a pause.
	return max(c.handler.MaxTimeout, 2*c.agent.ReadTimeout+c.agent.Fallback) + 10*time.Second
}
