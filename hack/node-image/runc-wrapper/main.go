// Command runc-wrapper stands in for runc on hosts whose capability bounding set withholds some
// capabilities (seen: CAP_SYS_RESOURCE on some VMs). Before handing over to the real runc it
// rewrites the OCI spec runc is about to read, so that containers ask only for what the host can
// grant:
//
//   - every capability outside the bounding set is removed from each capability list of
//     `<bundle>/config.json` (create, run) and of the `--process` file (exec);
//   - without CAP_SYS_RESOURCE: a negative `oomScoreAdj` is removed, and rlimits above the current
//     hard limit are lowered to it (raising either needs that capability).
//
// Everything else is passed through unchanged: same arguments, same environment, same stdio.
// On a host that lacks nothing, the spec is left untouched. lastcall uses it twice: as Docker's
// default runtime on such hosts (hack/docker-up.sh) and as /usr/local/sbin/runc inside the offline
// kind node image (hack/node-image), where containerd's shim finds it first on PATH.
//
// The real runc is $RUNC_WRAPPER_REAL if set, else the first of /usr/sbin/runc, /usr/bin/runc,
// /usr/local/bin/runc, /usr/local/sbin/runc, /sbin/runc, /bin/runc that is not this program.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames maps capability names (as in OCI specs) to their numbers, linux/capability.h.
var capNames = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

const capSysResource = 24

// rlimitNumbers maps OCI rlimit types to their resource numbers, asm-generic/resource.h.
var rlimitNumbers = map[string]int{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
	"RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
	"RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

// host is what the rewrite needs to know about the machine; a variable so tests can fake it.
type host struct {
	bounding  uint64                            // capability bounding set, bit n = capability n
	hardLimit func(resource int) (uint64, bool) // current hard rlimit of a resource
}

func (h host) has(capability uint) bool { return h.bounding&(1<<capability) != 0 }

func main() {
	args := os.Args[1:]
	h, err := currentHost()
	if err != nil {
		warn("reading the capability bounding set: %v (passing the spec through)", err)
	} else {
		for _, f := range specFiles(args) {
			if err := rewriteFile(f.path, f.process, h); err != nil {
				warn("rewriting %s: %v (passing it through)", f.path, err)
			}
		}
	}
	real, err := realRunc()
	if err != nil {
		warn("%v", err)
		os.Exit(127)
	}
	err = syscall.Exec(real, append([]string{real}, args...), os.Environ())
	warn("exec %s: %v", real, err)
	os.Exit(127)
}

func warn(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "runc-wrapper: "+format+"\n", a...)
}

type specFile struct {
	path    string
	process bool // a runc exec --process file (an OCI Process), not a whole config.json
}

// specFiles finds the spec files runc will read: <bundle>/config.json of create and run, and the
// --process file of exec. Other subcommands read no spec.
func specFiles(args []string) []specFile {
	var out []specFile
	sub := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if sub == "" {
			if !strings.HasPrefix(a, "-") {
				sub = a
				continue
			}
			// global flags that take a separate value
			switch a {
			case "--root", "--log", "--log-format", "--criu", "--rootless":
				i++
			}
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		want := ""
		switch {
		case (sub == "create" || sub == "run") && (name == "--bundle" || name == "-b"):
			want = "bundle"
		case sub == "exec" && (name == "--process" || name == "-p"):
			want = "process"
		default:
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				continue
			}
			i++
			value = args[i]
		}
		if want == "bundle" {
			out = append(out, specFile{path: filepath.Join(value, "config.json")})
		} else {
			out = append(out, specFile{path: value, process: true})
		}
	}
	return out
}

func rewriteFile(path string, process bool, h host) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, changed, err := rewrite(raw, process, h)
	if err != nil || !changed {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".runc-wrapper"
	if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// rewrite returns the spec with what the host cannot grant removed, and whether anything changed.
func rewrite(raw []byte, process bool, h host) ([]byte, bool, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var spec map[string]any
	if err := dec.Decode(&spec); err != nil {
		return nil, false, err
	}
	proc := spec
	if !process {
		p, ok := spec["process"].(map[string]any)
		if !ok {
			return raw, false, nil
		}
		proc = p
	}
	changed := false
	if caps, ok := proc["capabilities"].(map[string]any); ok {
		for set, v := range caps {
			list, ok := v.([]any)
			if !ok {
				continue
			}
			kept := list[:0:0]
			for _, c := range list {
				name, _ := c.(string)
				if n, known := capNames[strings.ToUpper(name)]; known && !h.has(n) {
					changed = true
					continue
				}
				kept = append(kept, c)
			}
			caps[set] = kept
		}
	}
	if !h.has(capSysResource) {
		if adj, ok := proc["oomScoreAdj"].(json.Number); ok {
			if n, err := adj.Int64(); err == nil && n < 0 {
				delete(proc, "oomScoreAdj")
				changed = true
			}
		}
		if limits, ok := proc["rlimits"].([]any); ok && h.hardLimit != nil {
			for _, l := range limits {
				m, ok := l.(map[string]any)
				if !ok {
					continue
				}
				typ, _ := m["type"].(string)
				res, known := rlimitNumbers[strings.ToUpper(typ)]
				if !known {
					continue
				}
				hard, ok := h.hardLimit(res)
				if !ok {
					continue
				}
				for _, k := range []string{"hard", "soft"} {
					if v, ok := m[k].(json.Number); ok {
						if n, err := strconv.ParseUint(v.String(), 10, 64); err == nil && n > hard {
							m[k] = json.Number(strconv.FormatUint(hard, 10))
							changed = true
						}
					}
				}
			}
		}
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(spec)
	return out, true, err
}

func currentHost() (host, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return host{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			b, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return host{}, err
			}
			return host{bounding: b, hardLimit: hardLimit}, nil
		}
	}
	if err := s.Err(); err != nil {
		return host{}, err
	}
	return host{}, errors.New("no CapBnd line in /proc/self/status")
}

func hardLimit(resource int) (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(resource, &l); err != nil {
		return 0, false
	}
	return l.Max, true
}

func realRunc() (string, error) {
	if p := os.Getenv("RUNC_WRAPPER_REAL"); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	selfInfo, _ := os.Stat(self)
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc", "/usr/local/sbin/runc", "/sbin/runc", "/bin/runc"} {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || (selfInfo != nil && os.SameFile(st, selfInfo)) {
			continue
		}
		return p, nil
	}
	return "", errors.New("no real runc found (set RUNC_WRAPPER_REAL)")
}
