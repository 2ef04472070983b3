package github_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/protocol"
)

// Meta is agent doctor's check of a GitHub host: /meta, no token.

func TestMetaGHESAndRootAPI(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		mode    githubtest.Mode
		kind    protocol.GitHubKind
		version string
	}{
		{"ghes", githubtest.GHES, protocol.GitHubEnterpriseServer, "3.19.0"},
		{"api at the root", githubtest.Cloud, protocol.GitHubCloud, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var statuses []int
			f := newFixture(t, tt.mode)
			svc, err := github.New(github.Options{Config: github.Config{CAFile: caFile(t, f), Proxy: github.ProxyDirect},
				Observe: func(status int, err error, d time.Duration) {
					mu.Lock()
					statuses = append(statuses, status)
					mu.Unlock()
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			res, err := svc.Meta(testCtx(t), f.fake.URL(), nil)
			if err != nil {
				t.Fatalf("Meta: %v", err)
			}
			if res.Endpoint.Kind != tt.kind || res.Version != tt.version {
				t.Errorf("Meta = %+v, want kind %s version %q", res, tt.kind, tt.version)
			}
			for _, r := range f.fake.Requests() {
				if r.Authorized {
					t.Errorf("%s %s carried credentials", r.Method, r.Path)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(statuses) == 0 || statuses[len(statuses)-1] != 200 {
				t.Errorf("observed statuses %v, want the last one 200", statuses)
			}
		})
	}
}

func TestMetaUntrustedCA(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	svc, err := github.New(github.Options{Config: github.Config{Proxy: github.ProxyDirect}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, err = svc.Meta(testCtx(t), f.fake.URL(), nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeGitHubTLS || !strings.Contains(pe.Message, "github.ca_file") {
		t.Errorf("Meta with an untrusted CA = %v, want github_tls naming github.ca_file", err)
	}
}

func caFile(t *testing.T, f *fixture) string {
	t.Helper()
	p, err := f.fake.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
