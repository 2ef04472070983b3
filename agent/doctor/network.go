package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/agent"
)

// target is the control plane, as the agent reaches it.
type target struct {
	u         *url.URL // the /healthz URL, http or https
	host      string
	port      string
	tls       bool
	proxy     *url.URL // nil: direct
	proxyFrom string   // which setting named the proxy
}

func (t target) hostPort() string { return net.JoinHostPort(t.host, t.port) }

// proxyText names the proxy for messages, without its password.
func (t target) proxyText() string {
	return fmt.Sprintf("%s (from %s)", (&url.URL{Scheme: t.proxy.Scheme, Host: t.proxy.Host}).String(), t.proxyFrom)
}

func (d *doctor) checkNetwork(ctx context.Context) {
	raw, err := agent.HTTPURL(d.cfg.ControlPlane, d.cfg.InsecureAllowWS, "/healthz")
	if err != nil {
		d.add("control plane", Fail, err.Error(), "fix control_plane in the config")
		d.reachable = false
		return
	}
	u, _ := url.Parse(raw)
	t := target{u: u, host: u.Hostname(), port: u.Port(), tls: u.Scheme == "https"}
	if t.port == "" {
		t.port = map[bool]string{true: "443", false: "80"}[t.tls]
	}
	d.target = t
	if !d.checkProxy() {
		d.reachable = false
		return
	}
	d.checkDNS(ctx)
	conn := d.checkTCP(ctx)
	if conn == nil {
		d.reachable = false
		return
	}
	if !d.checkTLS(ctx, conn) {
		d.reachable = false
		return
	}
	d.checkHTTP(ctx)
}

func (d *doctor) checkProxy() bool {
	pf, err := agent.ProxyFunc(d.cfg)
	if err != nil {
		d.add("proxy", Fail, err.Error(), "fix proxy in the config")
		return false
	}
	var p *url.URL
	if pf != nil {
		// The websocket's URL has the same host; only its scheme differs.
		p, err = pf(&http.Request{Method: http.MethodGet, URL: d.target.u, Header: http.Header{}})
		if err != nil {
			d.add("proxy", Fail, "the proxy from the environment is not a URL: "+errText(err), "fix HTTPS_PROXY (for the service: /etc/orchestrator-agent/environment), or set proxy: in the config")
			return false
		}
	}
	if p == nil {
		detail := "none: the agent connects to the control plane directly"
		if d.cfg.Proxy == "" && (hasEnv(d.o.Getenv, "HTTPS_PROXY") || hasEnv(d.o.Getenv, "https_proxy")) {
			detail += " (HTTPS_PROXY is set, but NO_PROXY or a loopback control plane excludes it)"
		}
		d.add("proxy", OK, detail, "")
		return true
	}
	d.target.proxy = p
	d.target.proxyFrom = "the proxy setting"
	if d.cfg.Proxy == "" {
		d.target.proxyFrom = "HTTPS_PROXY"
	}
	auth := ""
	if p.User != nil {
		auth = ", with basic authentication"
	}
	port := p.Port()
	if port == "" {
		port = map[string]string{"http": "80", "socks5": "1080"}[p.Scheme]
	}
	c, err := (&net.Dialer{Timeout: d.o.Timeout}).Dial("tcp", net.JoinHostPort(p.Hostname(), port))
	if err != nil {
		d.add("proxy", Fail, fmt.Sprintf("cannot reach the proxy %s: %s", d.target.proxyText(), errText(err)),
			"check the proxy's address (proxy: in the config, or HTTPS_PROXY in the service's environment file /etc/orchestrator-agent/environment) and that the proxy is up and lets this machine in")
		return false
	}
	c.Close()
	d.add("proxy", OK, fmt.Sprintf("%s answers%s", d.target.proxyText(), auth), "")
	return true
}

func hasEnv(getenv func(string) string, k string) bool {
	if getenv == nil {
		return false
	}
	return getenv(k) != ""
}

func (d *doctor) checkDNS(ctx context.Context) {
	t := d.target
	if net.ParseIP(t.host) != nil {
		d.add("dns", OK, t.host+" is an IP address: no lookup", "")
		return
	}
	ctx, cancel := d.step(ctx)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, t.host)
	switch {
	case err == nil:
		d.add("dns", OK, fmt.Sprintf("%s resolves to %s", t.host, strings.Join(addrs, ", ")), "")
	case t.proxy != nil:
		d.add("dns", Warn, fmt.Sprintf("%s does not resolve here (%s); the proxy resolves it for the agent", t.host, errText(err)), "nothing, if the proxy reaches the control plane (see below)")
	default:
		d.add("dns", Fail, fmt.Sprintf("cannot resolve %s: %s", t.host, errText(err)),
			"check control_plane's host name and this machine's DNS (resolv.conf); or, if only a proxy can reach it, set proxy: in the config")
	}
}

// checkTCP opens the connection the agent would: directly, or a tunnel
// through the proxy. It returns nil when that fails.
func (d *doctor) checkTCP(ctx context.Context) net.Conn {
	t := d.target
	ctx, cancel := d.step(ctx)
	defer cancel()
	if t.proxy == nil {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", t.hostPort())
		if err != nil {
			d.add("tcp", Fail, fmt.Sprintf("cannot connect to %s: %s", t.hostPort(), errText(err)),
				"check that the control plane listens there and that firewalls let this machine out to it; or set proxy: in the config if the network requires a proxy")
			return nil
		}
		d.add("tcp", OK, "connected to "+t.hostPort(), "")
		return c
	}
	if t.proxy.Scheme != "http" {
		d.add("tcp", Skip, fmt.Sprintf("through the %s proxy: checked by the websocket step", t.proxy.Scheme), "")
		d.add("tls", Skip, "through the "+t.proxy.Scheme+" proxy: checked by the websocket step", "")
		return nil
	}
	c, err := d.connect(ctx)
	if err != nil {
		fix := "allow " + t.hostPort() + " on the proxy (CONNECT), or reach the control plane without it (proxy: direct, or NO_PROXY)"
		var pe *proxyStatusError
		if errors.As(err, &pe) && pe.code == http.StatusProxyAuthRequired {
			fix = "the proxy wants credentials: put them in the proxy URL, http://USER:PASSWORD@proxy:port (proxy: in the config, or HTTPS_PROXY)"
			if t.proxy.User != nil {
				fix = "the proxy refused the credentials in the proxy URL: correct them"
			}
		}
		d.add("tcp", Fail, fmt.Sprintf("the proxy %s did not open a tunnel to %s: %s", t.proxyText(), t.hostPort(), errText(err)), fix)
		return nil
	}
	d.add("tcp", OK, fmt.Sprintf("the proxy %s opened a tunnel to %s", t.proxyText(), t.hostPort()), "")
	return c
}

// proxyStatusError: the proxy answered CONNECT with a status other than
// 200.
type proxyStatusError struct {
	code   int
	status string
}

func (e *proxyStatusError) Error() string { return "CONNECT answered " + e.status }

// connect opens a CONNECT tunnel through the http proxy, as the websocket
// library does (with Proxy-Authorization from the URL's user info).
func (d *doctor) connect(ctx context.Context) (net.Conn, error) {
	t := d.target
	port := t.proxy.Port()
	if port == "" {
		port = "80"
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(t.proxy.Hostname(), port))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: t.hostPort()}, Host: t.hostPort(), Header: http.Header{}}
	if u := t.proxy.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, &proxyStatusError{code: resp.StatusCode, status: resp.Status}
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		c.Close()
		return nil, errors.New("the proxy sent data before the tunnel opened")
	}
	return c, nil
}

// checkTLS verifies the control plane's certificate as the agent does
// (system roots, ca_file, control_plane_ca_pin). On failure it shows the
// chain the server presented: an unknown issuer there is how a
// TLS-inspecting proxy shows itself.
func (d *doctor) checkTLS(ctx context.Context, conn net.Conn) bool {
	defer conn.Close()
	t := d.target
	if !t.tls {
		d.add("tls", Skip, "plain http (insecure_allow_ws): nothing encrypts the connection", "use an https:// control_plane in production")
		return true
	}
	conf, err := agent.TLSConfig(d.cfg)
	if err != nil {
		d.add("tls", Fail, err.Error(), "fix ca_file or control_plane_ca_pin")
		return false
	}
	conf.ServerName = t.host
	ctx, cancel := d.step(ctx)
	defer cancel()
	tc := tls.Client(conn, conf)
	err = tc.HandshakeContext(ctx)
	if err == nil {
		st := tc.ConnectionState()
		leaf := st.PeerCertificates[0]
		detail := fmt.Sprintf("%s, certificate for %s issued by %s, valid until %s", tls.VersionName(st.Version),
			t.host, leaf.Issuer.String(), leaf.NotAfter.Format("2006-01-02"))
		trust := "the system's CAs"
		if d.cfg.CAFile != "" {
			trust += " and ca_file (" + d.cfg.CAFile + ")"
		}
		detail += "; trusted through " + trust
		if d.cfg.ControlPlaneCAPin != "" {
			detail += "; control_plane_ca_pin matches"
		}
		d.add("tls", OK, detail, "")
		return true
	}
	chain := d.presentedChain(ctx)
	var (
		pin *agent.PinError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	caFile := "ca_file is not set"
	if d.cfg.CAFile != "" {
		caFile = "ca_file is " + d.cfg.CAFile
	}
	detail := "the TLS handshake with " + t.hostPort() + " failed: " + errText(err)
	fix := "check the control plane's TLS setup"
	switch {
	case errors.As(err, &pin):
		detail = "the control plane's certificate chain holds no certificate pinned in control_plane_ca_pin"
		fix = "if the chain below is your control plane's, put its CA's pin in control_plane_ca_pin (the pins are listed); if it is not, something (a TLS-inspecting proxy?) is in the way: let the control plane through untouched"
		chain = chainText(pin.Chain, true)
	case errors.As(err, &uae):
		detail = fmt.Sprintf("the control plane's certificate is issued by %s, which this agent does not trust (%s)", issuerOf(uae.Cert), caFile)
		fix = "if that issuer is your control plane's CA, put its certificate (PEM) in the file ca_file names; if it is not, a TLS-inspecting proxy replaced the certificate: add the proxy's CA to ca_file, or have the proxy let the control plane through untouched"
	case errors.As(err, &hne):
		detail = "the control plane's certificate is not valid for " + t.host + ": " + errText(err)
		fix = "use in control_plane the host name the certificate names, or fix the certificate"
	case errors.As(err, &cie):
		detail = "the control plane's certificate is not valid: " + errText(err)
		fix = "renew the control plane's certificate (or fix this machine's clock, if the dates look right)"
	}
	if chain != "" {
		detail += "\npresented chain:\n" + chain
	}
	d.add("tls", Fail, detail, fix)
	return false
}

// presentedChain connects again without verifying, only to show what the
// server presents.
func (d *doctor) presentedChain(ctx context.Context) string {
	var conn net.Conn
	var err error
	if d.target.proxy != nil {
		conn, err = d.connect(ctx)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", d.target.hostPort())
	}
	if err != nil {
		return ""
	}
	defer conn.Close()
	// Not trusted, only shown.
	tc := tls.Client(conn, &tls.Config{ServerName: d.target.host, InsecureSkipVerify: true}) //nolint:gosec // inspecting, not trusting
	if err := tc.HandshakeContext(ctx); err != nil {
		return ""
	}
	return chainText(tc.ConnectionState().PeerCertificates, d.cfg.ControlPlaneCAPin != "")
}

func chainText(certs []*x509.Certificate, pins bool) string {
	var b strings.Builder
	for i, c := range certs {
		fmt.Fprintf(&b, "  %d: subject %q\n     issuer  %q", i, c.Subject.String(), c.Issuer.String())
		if pins {
			spki, whole := agent.CertPins(c)
			fmt.Fprintf(&b, "\n     pins    %s (key), %s (certificate)", spki, whole)
		}
		if i < len(certs)-1 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func issuerOf(c *x509.Certificate) string {
	if c == nil {
		return "an unknown issuer"
	}
	return fmt.Sprintf("%q", c.Issuer.String())
}

// checkHTTP asks the control plane's /healthz through the agent's HTTP
// client, and reads its clock from the Date header.
func (d *doctor) checkHTTP(ctx context.Context) {
	client, err := agent.HTTPClient(d.cfg)
	if err != nil {
		d.add("http", Fail, err.Error(), "fix ca_file, control_plane_ca_pin or proxy")
		return
	}
	defer client.CloseIdleConnections()
	ctx, cancel := d.step(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.target.u.String(), nil)
	if err != nil {
		d.add("http", Fail, err.Error(), "fix control_plane")
		return
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		d.add("http", Fail, "GET "+d.target.u.String()+": "+errText(err), "see the checks above")
		return
	}
	rtt := time.Since(start)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		// Date has whole seconds: compare with the middle of the call.
		mid := start.Add(rtt / 2)
		d.skew = &skewReading{skew: date.Sub(mid.Truncate(time.Second)), from: "the Date header of /healthz (to the second)"}
	}
	if resp.StatusCode != http.StatusOK {
		d.add("http", Warn, fmt.Sprintf("GET %s answered HTTP %d", d.target.u, resp.StatusCode),
			"check that control_plane is the control plane's URL (and not a proxy's or load balancer's error page)")
		return
	}
	d.add("http", OK, fmt.Sprintf("GET %s answered 200 in %s", d.target.u, rtt.Round(time.Millisecond)), "")
}
