// Package web is the control plane's web console: a page, a stylesheet and
// a script, hand-written and embedded in the binary (no build step, nothing
// loaded from anywhere but the control plane itself), and the in-memory
// sessions of the people signed in to it. The page's script calls the same
// HTTP API v1 as every other client.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"
)

// static holds the console's files, served under AssetPrefix (index.html
// at "/").
//
//go:embed static
var static embed.FS

// AssetPrefix is the path the console's files are served under.
const AssetPrefix = "/ui/"

// CSP is the Content-Security-Policy of every file of the console: only the
// control plane's own origin, no inline script or style, no frames, no
// plugins, no form posted elsewhere.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	name  string // path below static/
	body  []byte
	ctype string
	etag  string
}

// assets are the embedded files by name, read once.
var assets = func() map[string]asset {
	m := map[string]asset{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		ctype := mime.TypeByExtension(path.Ext(name))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		m[name] = asset{name: name, body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("web: read the embedded console: " + err.Error())
	}
	return m
}()

// Assets lists the paths the console serves: "/" and every file under
// AssetPrefix, sorted.
func Assets() []string {
	out := []string{"/"}
	for name := range assets {
		if name != "index.html" {
			out = append(out, AssetPrefix+name)
		}
	}
	sort.Strings(out)
	return out
}

// SecurityHeaders sets the headers every page and file of the console
// carries.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServeIndex serves the console's page (GET /).
func ServeIndex(w http.ResponseWriter, r *http.Request) {
	serve(w, r, assets["index.html"])
}

// ServeAsset serves one of the console's files (GET /ui/{file...}).
func ServeAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[r.PathValue("file")]
	if !ok || a.name == "index.html" {
		SecurityHeaders(w.Header())
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	serve(w, r, a)
}

func serve(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	SecurityHeaders(h)
	h.Set("Content-Type", a.ctype)
	// Revalidated on every load (the ETag makes that a 304), so that a new
	// binary's console is used at once.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
