package main

import (
	"os"
	"strings"
	"testing"
)

// The README promises to document every PROMANAGE_* setting.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	for _, s := range c.settings() {
		if !strings.Contains(string(b), "`"+s.env+"`") {
			t.Errorf("README.md does not document %s", s.env)
		}
	}
}
