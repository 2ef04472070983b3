package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/policy"
)

func TestParseOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		raw          string
		want         policy.Origin
		wantString   string
		wantHostPort string
		wantErr      error
	}{
		{name: "https default port", raw: "https://git.example.com", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}, wantString: "https://git.example.com", wantHostPort: "git.example.com:443"},
		{name: "explicit default port", raw: "https://git.example.com:443", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}, wantString: "https://git.example.com", wantHostPort: "git.example.com:443"},
		{name: "case, leading zero port, path, query, fragment", raw: "HTTPS://Git.Example.COM:0443/api/v3?x=1#y", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}, wantString: "https://git.example.com", wantHostPort: "git.example.com:443"},
		{name: "trailing dot", raw: "https://git.example.com./", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}, wantString: "https://git.example.com", wantHostPort: "git.example.com:443"},
		{name: "other port", raw: "https://git.example.com:8443/api/v3", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "8443"}, wantString: "https://git.example.com:8443", wantHostPort: "git.example.com:8443"},
		{name: "http default port", raw: "http://localhost", want: policy.Origin{Scheme: "http", Host: "localhost", Port: "80"}, wantString: "http://localhost", wantHostPort: "localhost:80"},
		{name: "http other port", raw: "http://127.0.0.1:8080", want: policy.Origin{Scheme: "http", Host: "127.0.0.1", Port: "8080"}, wantString: "http://127.0.0.1:8080", wantHostPort: "127.0.0.1:8080"},
		{name: "ipv6 with port", raw: "https://[::1]:8443/x", want: policy.Origin{Scheme: "https", Host: "::1", Port: "8443"}, wantString: "https://[::1]:8443", wantHostPort: "[::1]:8443"},
		{name: "ipv6 default port", raw: "https://[2001:DB8::1]", want: policy.Origin{Scheme: "https", Host: "2001:db8::1", Port: "443"}, wantString: "https://[2001:db8::1]", wantHostPort: "[2001:db8::1]:443"},
		{name: "empty port", raw: "https://git.example.com:", want: policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}, wantString: "https://git.example.com", wantHostPort: "git.example.com:443"},

		{name: "ftp", raw: "ftp://git.example.com", wantErr: policy.ErrNotHTTP},
		{name: "no scheme", raw: "git.example.com", wantErr: policy.ErrNotHTTP},
		{name: "scheme-relative", raw: "//git.example.com", wantErr: policy.ErrNotHTTP},
		{name: "empty", raw: "", wantErr: policy.ErrNotHTTP},
		{name: "javascript", raw: "javascript:alert(1)", wantErr: policy.ErrNotHTTP},
		{name: "user", raw: "https://bot@git.example.com", wantErr: policy.ErrUserInfo},
		{name: "user and password", raw: "https://bot:canary-7f3c9e1d-SECRET@git.example.com", wantErr: policy.ErrUserInfo},
		{name: "empty user info", raw: "https://@git.example.com", wantErr: policy.ErrUserInfo},
		{name: "two at signs", raw: "https://git.example.com@evil.example@git.example.com", wantErr: policy.ErrUserInfo},
		{name: "backslash trick", raw: `https://evil.example\@git.example.com`, wantErr: policy.ErrUserInfo},
		{name: "user info in unparseable URL", raw: "https://bot:canary-7f3c9e1d-SECRET@git example.com", wantErr: policy.ErrUserInfo},
		{name: "opaque", raw: "https:git.example.com", wantErr: policy.ErrNoHost},
		{name: "no host", raw: "https://", wantErr: policy.ErrNoHost},
		{name: "port only", raw: "https://:443", wantErr: policy.ErrNoHost},
		{name: "only a dot", raw: "https://./", wantErr: policy.ErrNoHost},
		{name: "port too large", raw: "https://git.example.com:99999", wantErr: policy.ErrInvalidPort},
		{name: "port zero", raw: "https://git.example.com:0", wantErr: policy.ErrInvalidPort},
		{name: "space in host", raw: "https://git example.com", wantErr: policy.ErrNotURL},
		{name: "leading space", raw: " https://git.example.com", wantErr: policy.ErrNotURL},
		{name: "control character", raw: "https://git.example.com\n", wantErr: policy.ErrNotURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := policy.ParseOrigin(tt.raw)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseOrigin(%q) = %+v, %v; want error %v", tt.raw, got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "canary") || (tt.raw != "" && strings.Contains(err.Error(), tt.raw)) {
					t.Errorf("the error %q quotes the URL", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseOrigin(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("ParseOrigin(%q) = %+v, want %+v", tt.raw, got, tt.want)
			}
			if s := got.String(); s != tt.wantString {
				t.Errorf("String() = %q, want %q", s, tt.wantString)
			}
			if hp := got.HostPort(); hp != tt.wantHostPort {
				t.Errorf("HostPort() = %q, want %q", hp, tt.wantHostPort)
			}
			// What String prints parses back to the same origin.
			again, err := policy.ParseOrigin(got.String())
			if err != nil || again != got {
				t.Errorf("ParseOrigin(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}
