package plugins

import (
	"os"
	"strings"
	"testing"
)

// ABI.md's limit tables state exactly the limits the host enforces: every
// entry of Limits (the binary's registry) appears as a row with its default
// value, and every row of those tables is in the registry.
func TestABIStatesTheLimitsInForce(t *testing.T) {
	b, err := os.ReadFile("ABI.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## 5. Limits")
	end := strings.Index(doc, "## 6.")
	if start < 0 || end < start {
		t.Fatal("ABI.md has no section 5 followed by section 6")
	}
	section := doc[start:end]
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "limit" {
			continue
		}
		rows[strings.TrimSpace(cells[1])] = strings.TrimSpace(cells[2])
	}
	known := map[string]bool{}
	for _, l := range Limits(nil) {
		known[l.Name] = true
		got, ok := rows[l.Name]
		if !ok {
			t.Errorf("ABI.md section 5 has no row for %q (value %s)", l.Name, l.Value)
			continue
		}
		if got != l.Value {
			t.Errorf("ABI.md says %q is %q; the host enforces %q", l.Name, got, l.Value)
		}
	}
	for name := range rows {
		if !known[name] {
			t.Errorf("ABI.md section 5 lists %q, which the host does not enforce (not in Limits)", name)
		}
	}
}
