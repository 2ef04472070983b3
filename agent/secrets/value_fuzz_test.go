package secrets

import (
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
)

const fuzzCanary = "canary-0c4e7a91-VALUE"

// FuzzJSONObjectNeverQuotes parses secret values (as an AWS secret's
// SecretString) that hold the canary among arbitrary bytes, and checks that
// what parseJSONObject says about a bad value holds no form of it.
func FuzzJSONObjectNeverQuotes(f *testing.F) {
	for _, s := range [][2]string{
		{`{"token": "`, `"x}`},
		{`{"token": `, `}`},
		{`{"token": "`, ``},
		{`["`, `"]`},
		{`"`, `"`},
		{``, ``},
		{`{"a": 1, "a": "`, `"}`},
		{`{"`, `": 1}`},
		{`{"token": "x"} `, ``},
		{`{"token": [1, {"`, `": 2}]}`},
		{"\xef\xbb\xbf{\"t\": \"", "\"\n\n,}"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		values, problem := parseJSONObject([]byte(prefix + fuzzCanary + suffix))
		if problem != "" {
			if values != nil {
				t.Fatalf("values and a problem: %q", problem)
			}
			if form, leaked := redact.Find([]byte(problem), fuzzCanary); leaked {
				t.Fatalf("the problem quotes the value (%q): %s", form, problem)
			}
		}
		// Listing the keys leaves out a key with an empty value (a value
		// typed where a key belongs).
		for k, v := range values {
			if v.kind == "" && v.s.Empty() {
				if form, leaked := redact.Find([]byte(keyNames(map[string]value{k: v})), fuzzCanary); leaked {
					t.Fatalf("keyNames lists a key with no value (%q)", form)
				}
			}
		}
	})
}
