package plugins

import (
	"encoding/json"
	"testing"
)

// RFC 7396 examples.
func TestMergePatch(t *testing.T) {
	cases := []struct{ doc, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	}
	for _, c := range cases {
		got, err := MergePatch(json.RawMessage(c.doc), json.RawMessage(c.patch))
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		json.Unmarshal(got, &g)
		json.Unmarshal([]byte(c.want), &w)
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		if string(gb) != string(wb) {
			t.Errorf("merge %s + %s = %s, want %s", c.doc, c.patch, gb, wb)
		}
	}
}

// Numbers keep their exact text: an amount in minor units past 2^53 must
// not be rounded by a patch that does not touch it.
func TestMergePatchKeepsLargeIntegers(t *testing.T) {
	got, err := MergePatch(json.RawMessage(`{"name":"a","budget":{"amount_minor":9007199254740993,"currency":"EUR"}}`),
		json.RawMessage(`{"name":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Budget struct {
			AmountMinor int64 `json:"amount_minor"`
		} `json:"budget"`
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if v.Budget.AmountMinor != 9007199254740993 {
		t.Fatalf("amount_minor = %d after merging %s, want 9007199254740993", v.Budget.AmountMinor, got)
	}
	if _, err := MergePatch(json.RawMessage(`{}`), json.RawMessage(`{"a":1} {"b":2}`)); err == nil {
		t.Fatal("a patch with data after the object was accepted")
	}
}
