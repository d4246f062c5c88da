//go:build e2e

package rollout

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// adoptionService is the Consul service name in the README's snippet; each workload puts its own.
const adoptionService = "web"

// adoption is the README's adoption snippet (section "One label to adopt"): the pod-template
// labels and annotations the lastcall variants carry and nothing else of lastcall's, so that the
// snippet a user copies is the one the e2e proves (issue 16).
var adoption struct{ labels, annotations map[string]string }

// loadAdoption reads the snippet: the first yaml block of the section, whose last document is a
// Deployment's pod template.
func loadAdoption(readme string) error {
	data, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	text := string(data)
	_, section, ok := strings.Cut(text, "\n## One label to adopt")
	if !ok {
		return fmt.Errorf("%s: no section \"One label to adopt\"", readme)
	}
	_, rest, ok := strings.Cut(section, "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		return fmt.Errorf("%s: no yaml block in \"One label to adopt\"", readme)
	}
	docs := strings.Split(block, "\n---\n")
	var d struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(docs[len(docs)-1]), &d); err != nil {
		return fmt.Errorf("%s: adoption snippet: %w", readme, err)
	}
	m := d.Spec.Template.Metadata
	if m.Labels["lastcall.dev/inject"] != "true" {
		return fmt.Errorf("%s: the adoption snippet's pod template has no label lastcall.dev/inject: \"true\" (labels %v)", readme, m.Labels)
	}
	adoption.labels, adoption.annotations = m.Labels, m.Annotations
	return nil
}
