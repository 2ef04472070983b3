package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// The web console in a real browser (issue 8): headless Chromium, driven
// over the DevTools protocol, against a real control plane, a real agent
// and the fake GitHub. A platform admin signs in, registers an agent and
// sees its enrollment token once; the agent enrolls with that token and the
// page shows it online without a reload; a platform user adds a GitHub
// Enterprise Server connection (the secret manager picked from the agent),
// tests it, sees the missing scopes, picks an organization, protects it
// with a password and saves it; reopening it asks for the password and a
// wrong one is refused; the jobs show their timeline; revoking the agent
// takes it offline. Every request the browser makes goes to the control
// plane, and the page logs no CSP violation or script error.
//
// Each screen is saved as a PNG of 1280×800: into docs/screenshots/ with
// UPDATE_SCREENSHOTS=1 (the README shows them), else into a temporary
// directory.

const consolePassword = "console-PASSWORD-7c1e-correct horse"

// stepTimeout bounds each step of the browser test.
const stepTimeout = 20 * time.Second

// chromiumPath finds the browser: $CHROMIUM, else chromium on the PATH.
// Without one the test is skipped, except in CI (CI=true), where .ci/run
// installs Debian's chromium and its absence is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: .ci/run installs it (apt-get install chromium); the console's browser test needs it")
	}
	t.Skip("chromium is not installed (apt-get install chromium, or set CHROMIUM): skipping the console's browser test")
	return ""
}

// browserLog is what the page did that the test checks at the end: every
// request it made, and every error it logged.
type browserLog struct {
	mu       sync.Mutex // guards the fields below
	requests []string
	errors   []string
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, e.Request.URL)
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
		b.errors = append(b.errors, "exception: "+msg)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
			var args []string
			for _, a := range e.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.errors = append(b.errors, "console."+string(e.Type)+": "+strings.Join(args, " "))
		}
	case *cdplog.EventEntryAdded:
		// A refused API call (401 before sign-in, 403 for a wrong
		// password) is logged by the network source: expected. Anything
		// else at error level is not, a CSP violation above all.
		if e.Entry.Source != cdplog.EntrySourceNetwork && (e.Entry.Level == cdplog.EntryLevelError || e.Entry.Source == cdplog.EntrySourceSecurity) {
			b.errors = append(b.errors, fmt.Sprintf("log %s/%s: %s (%s)", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL))
		}
	}
}

func (b *browserLog) snapshot() (requests, errors []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.errors...)
}

// console drives one browser tab through the test.
type console struct {
	t    *testing.T
	ctx  context.Context // the test's steps
	tab  context.Context // the tab, for a screenshot after a step's deadline
	dir  string          // where screenshots go
	shot int
}

// do runs browser steps, failing the test (with a screenshot of the page as
// it was) on the first error.
func (c *console) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		c.failShot()
		c.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression and decodes its result.
func eval[T any](c *console, what, expr string) T {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		c.failShot()
		c.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is truthy.
func (c *console) waitJS(what, expr string, timeout time.Duration) {
	c.t.Helper()
	if _, err := chromedp.Run(c.ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
		c.failShot()
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitText waits until the element of a CSS selector shows text.
func (c *console) waitText(sel, text string, timeout time.Duration) {
	c.t.Helper()
	c.waitJS(fmt.Sprintf("%s to show %q", sel, text),
		fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.innerText.includes(%s); })()`, jsString(sel), jsString(text)), timeout)
}

// text returns the visible text of the element of a CSS selector.
func (c *console) text(sel string) string {
	c.t.Helper()
	return eval[string](c, "read "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? e.innerText : ''; })()`, jsString(sel)))
}

// choose picks the option of a select by value, as a person would.
func (c *console) choose(sel, value string) {
	c.t.Helper()
	ok := eval[bool](c, "choose "+value+" in "+sel, fmt.Sprintf(`(() => {
		const s = document.querySelector(%s);
		if (!s || ![...s.options].some((o) => o.value === %s && !o.disabled)) return false;
		s.focus(); s.value = %s; s.dispatchEvent(new Event('change', { bubbles: true })); s.blur();
		return true;
	})()`, jsString(sel), jsString(value), jsString(value)))
	if !ok {
		c.failShot()
		c.t.Fatalf("%s has no option %q", sel, value)
	}
}

// type_ replaces the text of an input with keystrokes.
func (c *console) type_(sel, text string) {
	c.t.Helper()
	eval[chromedp.Void](c, "clear "+sel, fmt.Sprintf(`document.querySelector(%s).value = ''`, jsString(sel)))
	c.do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// scrollTo brings the section of an element to the top of the viewport.
func (c *console) scrollTo(sel string) {
	c.t.Helper()
	eval[chromedp.Void](c, "scroll to "+sel, fmt.Sprintf(`(() => {
		const e = document.querySelector(%s);
		(e.closest('section') || e).scrollIntoView({ block: 'start' });
	})()`, jsString(sel)))
}

func (c *console) click(sel string) {
	c.t.Helper()
	c.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

func (c *console) visible(sel string) {
	c.t.Helper()
	c.do("wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// screenshot saves the viewport as NN-name.png.
func (c *console) screenshot(name string) {
	c.t.Helper()
	// Let the page settle: fonts, the dialog's backdrop, a poll.
	time.Sleep(150 * time.Millisecond)
	buf, err := chromedp.Run(c.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		c.t.Fatalf("screenshot %s: %v", name, err)
	}
	c.shot++
	path := filepath.Join(c.dir, fmt.Sprintf("%02d-%s.png", c.shot, name))
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// failShot saves what the page looked like when a step failed.
func (c *console) failShot() {
	ctx, cancel := context.WithTimeout(c.tab, 3*time.Second)
	defer cancel()
	if buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		path := filepath.Join(os.TempDir(), "console-failure.png")
		if os.WriteFile(path, buf, 0o644) == nil {
			c.t.Logf("the page at the failure: %s", path)
		}
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// screenshotDir is docs/screenshots with UPDATE_SCREENSHOTS=1, else a
// temporary directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return t.TempDir()
	}
	dir := filepath.Join("..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	return dir
}

func TestConsole(t *testing.T) {
	chromium := chromiumPath(t)
	cp := newControlPlane(t, connJourneyOptions)
	// The connection's password is kept only as a hash, and neither it nor
	// the admin token the page signed in with is in the control plane's
	// log, its answers to the harness or its store.
	t.Cleanup(func() {
		ev, err := cp.evidence()
		if err != nil {
			t.Errorf("read the control plane's evidence: %v", err)
		}
		for _, e := range ev {
			for _, secret := range []string{consolePassword, adminToken} {
				if form, ok := redact.Find(e.data, secret); ok {
					t.Errorf("secret leaked: %s holds %.8s… as %q", e.name, secret, form)
				}
			}
		}
	})
	fake := connJourneyFake(t, githubtest.GHES)
	origin := cp.URL()

	// The browser: headless, no sandbox (containers), no GPU, nothing of its
	// own on the network, a fresh profile; 1280×800.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	seen := &browserLog{}
	tabCtx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(seen.listen))
	ctx, cancelRun := context.WithTimeout(tabCtx, 2*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			requests, errs := seen.snapshot()
			t.Logf("the browser's requests: %v\nthe page's errors: %v", requests, errs)
		}
		if err := chromedp.Cancel(ctx); err != nil {
			t.Logf("close the browser: %v", err)
		}
		cancelRun()
		cancelTab()
		cancelAlloc()
	})
	c := &console{t: t, ctx: ctx, tab: tabCtx, dir: screenshotDir(t)}
	// The first run starts the browser and opens the tab, which live as
	// long as its context: the test's, not a step's.
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
			return err
		}),
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(origin+"/")); err != nil {
		t.Fatalf("start the browser: %v", err)
	}

	// Sign in: a wrong token is refused next to the field.
	c.visible("#signin-token")
	c.screenshot("sign-in")
	c.type_("#signin-token", "not-the-admin-token")
	c.click("#signin-submit")
	c.waitText("#signin-token-error", "not the admin token", 5*time.Second)
	c.type_("#signin-token", adminToken)
	c.click("#signin-submit")
	c.visible("#register-agent")

	// Register an agent: the token is shown once, with the commands.
	c.click("#register-agent")
	c.visible("#agent-name")
	c.type_("#agent-name", "vm-console")
	c.click("#register-submit")
	c.visible("#enroll-token")
	token := c.text("#enroll-token")
	if !strings.HasPrefix(token, "oet_") {
		t.Fatalf("enrollment token %q", token)
	}
	linux, windows := c.text("#cmd-linux"), c.text("#cmd-windows")
	for _, want := range []string{"agent enroll --control-plane " + origin + " --token " + token, "agent install --config /etc/orchestrator-agent/agent.yaml"} {
		if !strings.Contains(linux, want) {
			t.Errorf("the Linux commands lack %q:\n%s", want, linux)
		}
	}
	for _, want := range []string{`agent.exe enroll --control-plane ` + origin + ` --token ` + token, `agent.exe install --config`} {
		if !strings.Contains(windows, want) {
			t.Errorf("the Windows commands lack %q:\n%s", want, windows)
		}
	}
	if once := c.text("#enroll-once"); !strings.Contains(once, "only this once") || !strings.Contains(once, "expires") {
		t.Errorf("the token's notice: %q", once)
	}
	c.screenshot("register-agent")
	c.click("#enroll-done")
	c.do("close the token", chromedp.WaitNotPresent(chromedp.CSS("#register-dialog")))
	if eval[bool](c, "look for the token", `document.documentElement.outerHTML.includes(`+jsString(token)+`)`) {
		t.Error("the enrollment token is still in the page after Done: it is shown once")
	}
	c.visible(`tr[data-agent-name="vm-console"] .badge[data-status="pending"]`)

	// The agent enrolls with the token from the page and runs; the page
	// shows it online without a reload.
	eval[chromedp.Void](c, "mark the page", `window.consoleMark = 'same page'`)
	stateDir := filepath.Join(t.TempDir(), "state")
	id, err := cp.enroll(token, stateDir)
	if err != nil {
		t.Fatalf("enroll with the token from the page: %v", err)
	}
	connJourneyAgent(t, cp, fake, stateDir)
	c.waitJS("the agent to show online", `!!document.querySelector('tr[data-agent-name="vm-console"] .badge[data-status="online"]')`, 15*time.Second)
	if eval[string](c, "read the mark", `window.consoleMark || ''`) != "same page" {
		t.Error("the page reloaded to show the agent online")
	}
	row := c.text(`tr[data-agent-name="vm-console"]`)
	host, _ := os.Hostname()
	for _, want := range []string{"Online", host, "Local file", "e2e"} {
		if !strings.Contains(row, want) {
			t.Errorf("the agent's row lacks %q: %q", want, row)
		}
	}
	c.screenshot("agents")

	// Add a GitHub Enterprise Server connection.
	c.click(`a[data-nav="connections"]`)
	c.visible("#add-connection")
	c.click("#add-connection")
	c.visible("#kind-ghes")
	c.click("#kind-ghes")
	c.visible("#f-name")
	c.type_("#f-name", "Platform GHES")
	// The URL is checked as it is typed.
	c.type_("#f-url", "https://github.com")
	c.waitText("#f-url-error", "GitHub's cloud", 5*time.Second)
	c.type_("#f-url", fake.URL()+"/api/v3")
	c.waitJS("the URL to be accepted", `document.querySelector('#f-url-error').hidden`, 5*time.Second)
	c.waitText("#f-url-hint", "Saved as "+fake.URL(), 5*time.Second)
	// The secret manager comes from the agent, read-only.
	c.waitJS("the agent in the list", `[...document.querySelectorAll('#f-agent option')].some((o) => o.value === `+jsString(id.AgentID)+` && o.text.includes('online'))`, 10*time.Second)
	c.choose("#f-agent", id.AgentID)
	c.visible("#f-backend")
	if got := eval[string](c, "read the backend", `(() => { const b = document.querySelector('#f-backend'); return (b.readOnly ? 'read-only ' : '') + b.value; })()`); got != "read-only Local file" {
		t.Errorf("secret manager field %q, want it read-only with Local file", got)
	}
	c.type_("#f-secret-name", "github/platform")
	c.type_("#f-username-key", "username")
	c.type_("#f-password-key", "token")
	eval[chromedp.Void](c, "scroll to the top", `window.scrollTo(0, 0)`)
	c.screenshot("add-connection")
	c.scrollTo("#step-3")
	c.screenshot("agent-and-secret")

	// Test Connection: signed in, the version, the missing scopes.
	c.click("#test-connection")
	c.visible("#outcome-ok")
	outcome := c.text("#test-outcome")
	for _, want := range []string{"svc-platform", "GitHub Enterprise Server 3.19.0", "Personal access token (classic)", "admin:org", "manage the organization", "2 visible"} {
		if !strings.Contains(outcome, want) {
			t.Errorf("the test's outcome lacks %q:\n%s", want, outcome)
		}
	}
	if strings.Contains(c.text("#missing-scopes"), "\nrepo\t") {
		t.Error("repo is granted but listed as missing")
	}
	c.scrollTo("#step-4")
	c.screenshot("test-connection")

	// The organizations came through the agent; pick one.
	c.waitJS("the organizations", `!document.querySelector('#f-org').disabled`, 5*time.Second)
	if orgs := c.text("#f-org"); !strings.Contains(orgs, "Platform") || !strings.Contains(orgs, "payments") || strings.Contains(orgs, "sso-only") {
		t.Errorf("organizations %q, want Platform and payments", orgs)
	}
	c.choose("#f-org", "Platform")

	// Protect it with a password, typed twice: a mismatch is refused at
	// the field.
	c.click("#f-protect")
	c.visible("#f-password")
	c.type_("#f-password", consolePassword)
	c.type_("#f-password2", consolePassword+"x")
	c.waitJS("the strength hint", `Number(document.querySelector('#pw-strength').dataset.level) >= 3`, 5*time.Second)
	c.click("#save-connection")
	c.waitText("#f-password2-error", "differ", 5*time.Second)
	c.type_("#f-password2", consolePassword)
	c.scrollTo("#step-5")
	c.screenshot("protect-and-save")
	c.click("#save-connection")

	// The list shows it locked.
	c.visible(`tr[data-connection-name="Platform GHES"] .lock`)
	conn := c.text(`tr[data-connection-name="Platform GHES"]`)
	for _, want := range []string{"GitHub Actions Enterprise Server", "vm-console", "Locked"} {
		if !strings.Contains(conn, want) {
			t.Errorf("the connection's row lacks %q: %q", want, conn)
		}
	}
	var list protocol.ConnectionList
	cp.doJSON("GET", "/api/v1/connections", nil, 200, &list)
	if len(list.Connections) != 1 || !list.Connections[0].Protected || !list.Connections[0].Active || list.Connections[0].Kind != protocol.GitHubEnterpriseServer {
		t.Fatalf("saved connections: %+v", list.Connections)
	}
	c.screenshot("connections")

	// Reopen it: the password is asked for, a wrong one refused.
	c.click(`tr[data-connection-name="Platform GHES"] a.conn-link`)
	c.visible("#unlock-password")
	c.type_("#unlock-password", "not-the-password")
	c.click("#unlock-submit")
	c.waitText("#unlock-password-error", "Wrong password", 5*time.Second)
	c.screenshot("connection-password")
	c.type_("#unlock-password", consolePassword)
	c.click("#unlock-submit")
	c.visible("#connection-form")
	if got := eval[string](c, "read the form", `document.querySelector('#f-name').value + '|' + document.querySelector('#f-org').value + '|' + document.querySelector('#f-url').value`); got != "Platform GHES|Platform|"+fake.URL() {
		t.Errorf("the opened connection shows %q", got)
	}
	eval[chromedp.Void](c, "scroll to the top", `window.scrollTo(0, 0)`)
	c.screenshot("connection")
	// Testing and saving the protected connection send its password.
	c.click("#test-connection")
	c.visible("#outcome-ok")
	c.click("#save-connection")
	c.waitText("#toast", "Platform GHES is saved", 5*time.Second)
	c.visible("#connection-form")

	// The jobs, and one job's timeline.
	c.click(`a[data-nav="jobs"]`)
	c.waitJS("the connection's jobs", `document.querySelectorAll('#jobs-body tr[data-job-id]').length >= 2`, 10*time.Second)
	if jobs := c.text("#jobs-body"); !strings.Contains(jobs, "Platform GHES") || !strings.Contains(jobs, "Test connection") || !strings.Contains(jobs, "succeeded") {
		t.Errorf("the jobs list: %q", jobs)
	}
	c.screenshot("jobs")
	c.click(`#jobs-body tr[data-job-id] a`)
	c.visible("#timeline")
	c.waitText("#timeline", "Finished", 5*time.Second)
	tl := c.text("#timeline")
	for _, want := range []string{"Queued", "Dispatched to the agent", "Accepted by the agent", "Finished", "succeeded"} {
		if !strings.Contains(tl, want) {
			t.Errorf("the timeline lacks %q:\n%s", want, tl)
		}
	}
	if strings.Contains(tl, "not yet") {
		t.Errorf("a finished job's timeline has a step not yet done:\n%s", tl)
	}
	c.screenshot("job")

	// Revoke the agent, confirmed: it drops offline at once.
	c.click(`a[data-nav="agents"]`)
	c.visible(`tr[data-agent-name="vm-console"] button[data-action="revoke"]`)
	c.click(`tr[data-agent-name="vm-console"] button[data-action="revoke"]`)
	c.visible("#confirm-ok")
	c.screenshot("revoke-agent")
	c.click("#confirm-ok")
	c.visible(`tr[data-agent-name="vm-console"] .badge[data-status="revoked"]`)
	if row := c.text(`tr[data-agent-name="vm-console"]`); !strings.Contains(row, "offline") {
		t.Errorf("the revoked agent's row: %q", row)
	}
	if a := cp.agent(id.AgentID); a.Status != protocol.AgentRevoked || a.SessionID != "" {
		t.Errorf("after revoking in the console the API shows %+v", a)
	}

	// Sign out: the session no longer opens the API.
	c.click("#sign-out")
	c.visible("#signin-token")
	if status := eval[int](c, "call the API after sign-out", `fetch('/api/v1/agents').then((r) => r.status)`); status != 401 {
		t.Errorf("the API after sign-out answers %d, want 401", status)
	}

	// Everything the browser asked for came from the control plane, and
	// the page logged no error (no CSP violation, no exception).
	requests, errs := seen.snapshot()
	if len(requests) < 20 {
		t.Errorf("only %d requests recorded: %v", len(requests), requests)
	}
	for _, u := range requests {
		if !strings.HasPrefix(u, origin+"/") {
			t.Errorf("the browser asked %s, outside the control plane %s", u, origin)
		}
	}
	for _, e := range errs {
		t.Errorf("the page logged: %s", e)
	}
}
