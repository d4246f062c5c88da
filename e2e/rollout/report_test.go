//go:build e2e

package rollout

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// writeReport writes the report package's files and appends the comparison with the preStop
// sleep baseline; it returns the Markdown file's path.
func writeReport(dir string, runs []report.Run) (string, error) {
	md, err := report.WriteFiles(dir, runs)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(md, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(comparison(runs)); err != nil {
		_ = f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	// out/e2e/latest → this run, for the README's commands
	latest := filepath.Join(filepath.Dir(dir), "latest")
	_ = os.Remove(latest)
	_ = os.Symlink(filepath.Base(dir), latest)
	return md, nil
}

// comparison sets lastcall's rolling updates beside the smallest preStop sleep whose every run
// failed no request through the Service (else the longest sleep tried), from the same suite run.
func comparison(runs []report.Run) string {
	var lc []report.Run
	sleeps := map[int][]report.Run{}
	for _, r := range runs {
		if r.Scenario != rollingUpdate.name {
			continue
		}
		if r.Variant == withLastcall.name {
			lc = append(lc, r)
		}
		var n int
		if _, err := fmt.Sscanf(r.Variant, "sleep-%d", &n); err == nil {
			sleeps[n] = append(sleeps[n], r)
		}
	}
	if len(lc) == 0 || len(sleeps) == 0 {
		return ""
	}
	var ns []int
	for n := range sleeps {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	n := ns[len(ns)-1]
	why := "no sleep tried failed zero requests through the Service in every run; the longest one tried"
	for _, m := range ns {
		if failedOn(sleeps[m], report.PathService) == 0 {
			n, why = m, "the smallest sleep whose every run failed no request through the Service"
			break
		}
	}
	base := sleeps[n]
	name := base[0].Variant
	lcDrain, lcRollout := medians(lc)
	bDrain, bRollout := medians(base)
	var b strings.Builder
	fmt.Fprintf(&b, "\n## lastcall against `preStop: sleep`\n\n")
	fmt.Fprintf(&b, "Rolling update of 6 replicas, same suite run. Sleeps tried, with requests failed through the Service / through Consul per value:")
	for i, m := range ns {
		sep := ";"
		if i == len(ns)-1 {
			sep = "."
		}
		fmt.Fprintf(&b, " %ds (%d runs): %d / %d%s", m, len(sleeps[m]), failedOn(sleeps[m], report.PathService), failedOn(sleeps[m], report.PathConsul), sep)
	}
	fmt.Fprintf(&b, "\nBaseline: `%s`, %s.", name, why)
	if failedOn(base, report.PathConsul) > 0 {
		fmt.Fprintf(&b, " Through Consul it still failed requests: nothing deregisters the pod before SIGTERM.")
	}
	b.WriteString("\n\n")
	fmt.Fprintf(&b, "| | lastcall (%d runs) | %s (%d runs) | ratio | target |\n| --- | --- | --- | --- | --- |\n", len(lc), name, len(base))
	fmt.Fprintf(&b, "| drain time p50 (deletion → exit, every retired pod) | %s | %s | %s | ≤ 40 %% |\n", short(lcDrain), short(bDrain), ratio(lcDrain, bDrain))
	fmt.Fprintf(&b, "| rollout time, median | %s | %s | %s | ≤ 60 %% |\n", short(lcRollout), short(bRollout), ratio(lcRollout, bRollout))
	return b.String()
}

// failedOn sums the failed requests of runs on path p.
func failedOn(runs []report.Run, p report.Path) int {
	n := 0
	for _, r := range runs {
		for _, s := range report.Summarize(r) {
			if s.Path == p {
				n += s.Failed
			}
		}
	}
	return n
}

// medians: the median drain over every drain of runs, and the median rollout time.
func medians(runs []report.Run) (drain, rollout time.Duration) {
	var ds, rs []time.Duration
	for _, r := range runs {
		for _, d := range r.Drains {
			ds = append(ds, d.Exited.Sub(d.Deleted))
		}
		rs = append(rs, r.End.Sub(r.Start))
	}
	return median(ds), median(rs)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func short(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*a.Seconds()/b.Seconds())
}
