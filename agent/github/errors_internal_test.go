package github

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// TestClassifyNet covers the failures a local fake cannot produce without
// the network (DNS) with the errors the standard library returns for them.
func TestClassifyNet(t *testing.T) {
	t.Parallel()
	svc, err := New(Options{Config: Config{Proxy: "http://proxy.example.com:3128"}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ep, err := Normalize("ghes", "https://git.example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := svc.session(ep, redact.New("ghp_canaryINTERNAL7f3c9e1dSECRET"), nil)
	if err != nil {
		t.Fatal(err)
	}
	wrap := func(e error) error { return &url.Error{Op: "Get", URL: "https://git.example.com/api/v3/user", Err: e} }
	tests := []struct {
		name string
		err  error
		code protocol.ErrorCode
		want []string
	}{
		{name: "dns", err: wrap(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "git.example.com", IsNotFound: true}}),
			code: protocol.CodeGitHubUnreachable, want: []string{"cannot resolve git.example.com (DNS: no such host)", "through the proxy http://proxy.example.com:3128, from github.proxy"}},
		{name: "proxy refused", err: wrap(&net.OpError{Op: "proxyconnect", Net: "tcp", Err: errors.New("dial tcp 10.0.0.1:3128: connect: connection refused")}),
			code: protocol.CodeGitHubUnreachable, want: []string{"cannot reach the proxy (through the proxy http://proxy.example.com:3128"}},
		{name: "timeout", err: wrap(context.DeadlineExceeded), code: protocol.CodeGitHubUnreachable, want: []string{"did not answer within 30s (github.timeout)"}},
		{name: "other", err: wrap(errors.New("something odd")), code: protocol.CodeGitHubUnreachable, want: []string{"cannot reach git.example.com:443", "something odd"}},
	}
	for _, tt := range tests {
		err := ss.classify(context.Background(), tt.err)
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != tt.code {
			t.Errorf("%s: classify = %v, want %s", tt.name, err, tt.code)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(pe.Message, w) {
				t.Errorf("%s: message %q lacks %q", tt.name, pe.Message, w)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if err := ss.classify(ctx, wrap(errors.New("x"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("classify after the job's deadline = %v, want the context's error", err)
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	tok := "ghp_canarySCRUB7f3c9e1dSECRET"
	ss := &session{token: redact.New(tok)}
	err := ss.scrubError(protocol.Errorf(protocol.CodeGitHubForbidden, "GitHub said: bad token %s here", tok))
	if strings.Contains(err.Error(), tok) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("scrubError = %v", err)
	}
	long := protocol.Errorf(protocol.CodeGitHubForbidden, "%s", strings.Repeat("x", 10000))
	var pe *protocol.Error
	if errors.As(ss.scrubError(long), &pe) && pe.Validate() != nil {
		t.Errorf("a long message is not bounded: %d bytes", len(pe.Message))
	}
}
