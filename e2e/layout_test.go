package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The layout guard (STYLE 3, DESIGN: protocol is the contract): the
// dependency direction of the module, checked on what `go list -deps`
// reports for the packages as they are built (test-only imports are not
// part of a binary and are not checked).
//
//   - protocol/... imports the standard library and itself, nothing else;
//   - agent/... and cmd/agent never depend on controlplane/...;
//   - controlplane/... and cmd/controlplane never depend on agent/...;
//   - only agent/... and cmd/agent depend on a cloud SDK (AWS, Azure,
//     go-github): not protocol, not the control plane, not anything else
//     of this module but the harness under e2e/ (the load tool runs the
//     real agent and control plane in one process, as the e2e tests do).

// cloudSDKs are the import path prefixes of cloud SDKs.
var cloudSDKs = []string{
	"github.com/aws/",
	"github.com/Azure/",
	"github.com/AzureAD/", // MSAL, under the Azure SDK's identity package
	"github.com/google/go-github",
}

// listedPackage holds the fields of `go list -json` that the guard reads.
type listedPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct imports
	Deps       []string // all transitive dependencies
	Module     *listedModule
	Error      *struct{ Err string }
}

type listedModule struct {
	Path string
	Main bool
}

// area is the part of the module a package belongs to: "protocol",
// "agent", "controlplane", "harness" (e2e/...), or "" for anything else (including packages of
// other modules and the standard library). mainModules holds the module
// paths of the main module(s); the import path decides, so that a package
// that go list could not load (no Module) is still placed.
func area(mainModules []string, importPath string) string {
	for _, mod := range mainModules {
		rel, ok := strings.CutPrefix(importPath, mod+"/")
		if !ok {
			continue
		}
		under := func(dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }
		switch {
		case under("protocol"):
			return "protocol"
		case under("agent"), under("cmd/agent"):
			return "agent"
		case under("controlplane"), under("cmd/controlplane"):
			return "controlplane"
		case under("e2e"):
			return "harness"
		}
	}
	return ""
}

// mainModules returns the paths of the main modules in a go list output.
func mainModules(pkgs []listedPackage) []string {
	seen := map[string]bool{}
	var mods []string
	for _, p := range pkgs {
		if p.Module != nil && p.Module.Main && !seen[p.Module.Path] {
			seen[p.Module.Path] = true
			mods = append(mods, p.Module.Path)
		}
	}
	return mods
}

func inModules(mods []string, importPath string) bool {
	for _, mod := range mods {
		if importPath == mod || strings.HasPrefix(importPath, mod+"/") {
			return true
		}
	}
	return false
}

func isCloudSDK(path string) bool {
	for _, prefix := range cloudSDKs {
		if strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return false
}

// checkLayout returns one line per violation of the layout, naming the
// package, the dependency it must not have, and the import chain between
// them. It is a pure function of go list's output so that it can be tested
// on made-up trees.
func checkLayout(pkgs []listedPackage) []string {
	byPath := make(map[string]*listedPackage, len(pkgs))
	for i := range pkgs {
		byPath[pkgs[i].ImportPath] = &pkgs[i]
	}
	mods := mainModules(pkgs)
	var problems []string
	report := func(p *listedPackage, dep, why string) {
		problems = append(problems, fmt.Sprintf("%s %s %s (%s)", p.ImportPath, why, dep, importChain(byPath, p.ImportPath, dep)))
	}
	for i := range pkgs {
		p := &pkgs[i]
		from := area(mods, p.ImportPath)
		if !inModules(mods, p.ImportPath) {
			continue // only this module's packages are held to the layout
		}
		deps := append([]string(nil), p.Deps...)
		sort.Strings(deps)
		for _, dep := range deps {
			d := byPath[dep]
			to := area(mods, dep)
			standard := d != nil && d.Standard || dep == "C"
			switch {
			case from == "protocol" && !standard && to != "protocol":
				report(p, dep, "must import only the standard library, but depends on")
			case from == "agent" && to == "controlplane":
				report(p, dep, "is agent code but depends on the control plane's")
			case from == "controlplane" && to == "agent":
				report(p, dep, "is control-plane code but depends on the agent's")
			case from != "agent" && from != "harness" && isCloudSDK(dep):
				report(p, dep, "is not agent code but depends on the cloud SDK")
			}
		}
	}
	return problems
}

// importChain returns the shortest chain of imports from one package to
// another, as "a -> b -> c", or "from -> … -> to" when the imports do not
// say.
func importChain(byPath map[string]*listedPackage, from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var chain []string
			for p := to; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
				chain[i], chain[j] = chain[j], chain[i]
			}
			return strings.Join(chain, " -> ")
		}
		p := byPath[cur]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	return from + " -> … -> " + to
}

// goList runs `go list -deps -json ./...` in the module's root.
func goList(t *testing.T) []listedPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go tool is not available: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, goTool, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}
	gomod := strings.TrimSpace(string(run("env", "GOMOD")))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside the module", gomod)
	}
	root := filepath.Dir(gomod)

	// -e: a package that does not build right now (work in progress) is
	// still listed, with what go list could read of its imports.
	cmd := exec.CommandContext(ctx, goTool, "list", "-e", "-deps", "-json=ImportPath,Standard,Imports,Deps,Module,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", root, err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("read go list output: %v", err)
		}
		if p.Error != nil {
			t.Logf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestLayout(t *testing.T) {
	t.Parallel()
	pkgs := goList(t)
	mods := mainModules(pkgs)
	protocols := 0
	for _, p := range pkgs {
		if area(mods, p.ImportPath) == "protocol" {
			protocols++
		}
	}
	if protocols == 0 {
		t.Fatalf("go list found no protocol package among %d packages: is the module path right?", len(pkgs))
	}
	for _, p := range checkLayout(pkgs) {
		t.Error(p)
	}
}

func TestCheckLayout(t *testing.T) {
	t.Parallel()
	const mod = "example.com/orch"
	mainModule := &listedModule{Path: mod, Main: true}
	std := func(path string, imports ...string) listedPackage {
		return listedPackage{ImportPath: path, Standard: true, Imports: imports}
	}
	other := func(path string, imports ...string) listedPackage {
		return listedPackage{ImportPath: path, Module: &listedModule{Path: path}, Imports: imports}
	}
	// own returns a package of the main module; deps are computed below.
	own := func(rel string, imports ...string) listedPackage {
		return listedPackage{ImportPath: mod + "/" + rel, Module: mainModule, Imports: imports}
	}
	// withDeps fills Deps from Imports, as go list does.
	withDeps := func(pkgs ...listedPackage) []listedPackage {
		byPath := map[string]*listedPackage{}
		for i := range pkgs {
			byPath[pkgs[i].ImportPath] = &pkgs[i]
		}
		var walk func(p string, seen map[string]bool)
		walk = func(p string, seen map[string]bool) {
			if q := byPath[p]; q != nil {
				for _, imp := range q.Imports {
					if !seen[imp] {
						seen[imp] = true
						walk(imp, seen)
					}
				}
			}
		}
		for i := range pkgs {
			seen := map[string]bool{}
			walk(pkgs[i].ImportPath, seen)
			for d := range seen {
				pkgs[i].Deps = append(pkgs[i].Deps, d)
			}
			sort.Strings(pkgs[i].Deps)
		}
		return pkgs
	}
	// base is a clean tree: each test case adds to it.
	base := func() []listedPackage {
		return []listedPackage{
			std("fmt", "io"), std("io"), std("encoding/json", "fmt"), std("net", "C"),
			other("go.uber.org/zap", "fmt"),
			other("github.com/gorilla/websocket", "net"),
			other("github.com/aws/aws-sdk-go-v2/service/secretsmanager", "github.com/aws/smithy-go"),
			other("github.com/aws/smithy-go", "fmt"),
			other("github.com/Azure/azure-sdk-for-go/sdk/azidentity", "github.com/AzureAD/microsoft-authentication-library-for-go/apps"),
			other("github.com/AzureAD/microsoft-authentication-library-for-go/apps", "net"),
			other("github.com/google/go-github/v66/github", "net"),
			own("protocol", "encoding/json", "fmt"),
			own("protocol/internal/wire", "fmt", mod+"/protocol"),
			own("agent", mod+"/protocol", mod+"/agent/secrets", "github.com/gorilla/websocket", "go.uber.org/zap"),
			own("agent/secrets", "github.com/aws/aws-sdk-go-v2/service/secretsmanager", "github.com/Azure/azure-sdk-for-go/sdk/azidentity"),
			own("agent/github", "github.com/google/go-github/v66/github"),
			own("cmd/agent", mod+"/agent"),
			own("controlplane", mod+"/protocol", mod+"/controlplane/store", "github.com/gorilla/websocket"),
			own("controlplane/store", mod+"/protocol"),
			own("cmd/controlplane", mod+"/controlplane"),
			own("internal/redact", "fmt"),
			own("agentic", "fmt"),               // not under agent/: a prefix is not a folder
			own("controlplanetools", "net"),     // nor is this under controlplane/
			own("cmd/agentctl", mod+"/agentic"), // nor this under cmd/agent
		}
	}
	replace := func(pkgs []listedPackage, p listedPackage) []listedPackage {
		for i := range pkgs {
			if pkgs[i].ImportPath == p.ImportPath {
				pkgs[i] = p
				return pkgs
			}
		}
		return append(pkgs, p)
	}

	tests := []struct {
		name string
		add  []listedPackage
		// want holds, for each expected problem, texts it must contain.
		want [][]string
		// n is the number of problems when more are reported than want
		// lists (everything that imports a bad package inherits its
		// problems).
		n int
	}{
		{name: "clean tree"},
		{
			name: "a harness under e2e runs both sides",
			add:  []listedPackage{own("e2e/load", mod+"/agent", mod+"/agent/secrets", mod+"/controlplane")},
		},
		{
			name: "protocol imports a third-party package",
			add:  []listedPackage{own("protocol", "encoding/json", "go.uber.org/zap")},
			want: [][]string{
				{mod + "/protocol must import only the standard library, but depends on go.uber.org/zap (" + mod + "/protocol -> go.uber.org/zap)"},
				{mod + "/protocol/internal/wire must import only", "(" + mod + "/protocol/internal/wire -> " + mod + "/protocol -> go.uber.org/zap)"},
			},
		},
		{
			name: "protocol subpackage reaches outside through another package of the module",
			add:  []listedPackage{own("protocol/internal/wire", mod+"/internal/redact")},
			want: [][]string{{mod + "/protocol/internal/wire must import only the standard library", mod + "/internal/redact"}},
		},
		{
			name: "protocol depends on the agent, indirectly",
			add: []listedPackage{
				own("protocol", "fmt", mod+"/protocol/internal/wire"),
				own("protocol/internal/wire", mod+"/agent/secrets"),
			},
			want: [][]string{
				// protocol: the agent package, and the SDKs it pulls in.
				{mod + "/protocol must import only", mod + "/agent/secrets", mod + "/protocol -> " + mod + "/protocol/internal/wire -> " + mod + "/agent/secrets"},
				{mod + "/protocol ", "github.com/Azure/azure-sdk-for-go/sdk/azidentity"},
				{mod + "/protocol ", "github.com/AzureAD/microsoft-authentication-library-for-go/apps"},
				{mod + "/protocol ", "github.com/aws/aws-sdk-go-v2/service/secretsmanager"},
				{mod + "/protocol ", "github.com/aws/smithy-go"},
				{mod + "/protocol/internal/wire must import only", mod + "/agent/secrets"},
				{mod + "/protocol/internal/wire ", "github.com/aws/smithy-go"},
				// And the control plane, which imports protocol, now
				// depends on the agent and the SDKs.
				{mod + "/controlplane is control-plane code but depends on the agent's " + mod + "/agent/secrets", mod + "/controlplane -> " + mod + "/protocol -> "},
				{mod + "/controlplane/store is not agent code but depends on the cloud SDK github.com/aws/smithy-go"},
				{mod + "/cmd/controlplane is not agent code but depends on the cloud SDK github.com/Azure/azure-sdk-for-go/sdk/azidentity"},
			},
			n: 5 * 5, // protocol, wire, controlplane, its store, cmd/controlplane: 5 each
		},
		{
			name: "agent imports the control plane",
			add:  []listedPackage{own("agent/secrets", mod+"/controlplane/store")},
			want: [][]string{
				// agent/secrets directly; agent and cmd/agent through it.
				{mod + "/agent is agent code but depends on the control plane's " + mod + "/controlplane/store", mod + "/agent -> " + mod + "/agent/secrets -> " + mod + "/controlplane/store"},
				{mod + "/agent/secrets is agent code", mod + "/controlplane/store"},
				{mod + "/cmd/agent is agent code", mod + "/cmd/agent -> " + mod + "/agent -> " + mod + "/agent/secrets -> " + mod + "/controlplane/store"},
			},
		},
		{
			name: "cmd/agent imports the control plane",
			add:  []listedPackage{own("cmd/agent", mod+"/agent", mod+"/controlplane")},
			want: [][]string{
				{mod + "/cmd/agent is agent code", mod + "/controlplane"},
				{mod + "/cmd/agent is agent code", mod + "/controlplane/store", mod + "/cmd/agent -> " + mod + "/controlplane -> " + mod + "/controlplane/store"},
			},
		},
		{
			name: "control plane imports the agent",
			add:  []listedPackage{own("controlplane/store", mod+"/protocol", mod+"/agent/github")},
			want: [][]string{
				{mod + "/controlplane is control-plane code but depends on the agent's " + mod + "/agent/github"},
				{mod + "/controlplane ", "cloud SDK github.com/google/go-github/v66/github", mod + "/controlplane -> " + mod + "/controlplane/store -> " + mod + "/agent/github -> github.com/google/go-github/v66/github"},
				{mod + "/controlplane/store is control-plane code", mod + "/agent/github"},
				{mod + "/controlplane/store ", "cloud SDK github.com/google/go-github"},
				{mod + "/cmd/controlplane is control-plane code", mod + "/agent/github"},
				{mod + "/cmd/controlplane ", "cloud SDK github.com/google/go-github"},
			},
		},
		{
			name: "agent imports a control-plane package that does not load",
			add: []listedPackage{
				own("agent/secrets", mod+"/controlplane/wip"),
				{ImportPath: mod + "/controlplane/wip", Error: &struct{ Err string }{"no Go files"}},
			},
			want: [][]string{
				{mod + "/agent is agent code but depends on the control plane's " + mod + "/controlplane/wip"},
				{mod + "/agent/secrets is agent code", mod + "/controlplane/wip"},
				{mod + "/cmd/agent is agent code", mod + "/controlplane/wip"},
			},
		},
		{
			name: "control plane uses the AWS SDK",
			add:  []listedPackage{own("controlplane/store", mod+"/protocol", "github.com/aws/smithy-go")},
			want: [][]string{
				{mod + "/controlplane ", "is not agent code but depends on the cloud SDK github.com/aws/smithy-go"},
				{mod + "/controlplane/store ", "github.com/aws/smithy-go"},
				{mod + "/cmd/controlplane ", "github.com/aws/smithy-go"},
			},
		},
		{
			name: "a shared package of the module uses the Azure SDK",
			add:  []listedPackage{own("internal/redact", "github.com/Azure/azure-sdk-for-go/sdk/azidentity")},
			want: [][]string{
				{mod + "/internal/redact is not agent code", "github.com/Azure/azure-sdk-for-go/sdk/azidentity"},
				{mod + "/internal/redact ", "github.com/AzureAD/microsoft-authentication-library-for-go/apps"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pkgs := base()
			for _, p := range tt.add {
				pkgs = replace(pkgs, p)
			}
			got := checkLayout(withDeps(pkgs...))
			n := tt.n
			if n == 0 {
				n = len(tt.want)
			}
			if len(got) != n {
				t.Errorf("checkLayout reported %d problems; want %d:\n%s", len(got), n, strings.Join(got, "\n"))
			}
			for _, want := range tt.want {
				found := false
				for _, g := range got {
					ok := true
					for _, w := range want {
						ok = ok && strings.Contains(g, w)
					}
					found = found || ok
				}
				if !found {
					t.Errorf("no problem reported with all of %q; got:\n%s", want, strings.Join(got, "\n"))
				}
			}
		})
	}
}
