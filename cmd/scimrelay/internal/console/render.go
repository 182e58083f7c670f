// SPDX-License-Identifier: Apache-2.0

package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/sinks"
)

//go:embed assets
var assets embed.FS

// page is what every template gets.
type page struct {
	// Title is the page's <title>, each bidi control character in it
	// shown as its code point (markup cannot go there), and its <h1>
	// unless Heading, which holds text a client chose, isolated, is set.
	Title   string
	Heading template.HTML
	Nav     string // the current section: overview, tenants, log, sinks, events, keys
	CSRF    string // the session's token; empty when signed out (no navigation then)
	Notice  string // said once, after an action
	Error   string
	Data    any
}

// pages are the parsed templates, by name, and the static assets'
// versions (a hash of each, in their URLs, so that they can be cached for
// good).
type pages struct {
	t        map[string]*template.Template
	versions map[string]string
}

// templateNames are the pages under assets/templates, each rendered inside
// layout.html.
var templateNames = []string{"login", "error", "overview", "tenant", "issued", "revoke", "log", "logentry", "sinks", "sink", "job", "events", "keys"}

func loadPages() (*pages, error) {
	p := &pages{t: map[string]*template.Template{}, versions: map[string]string{}}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(static, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		p.versions[name] = hex.EncodeToString(sum[:6])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the console's assets: %w", err)
	}
	funcs := template.FuncMap{
		"asset": func(name string) (string, error) {
			v, ok := p.versions[name]
			if !ok {
				return "", fmt.Errorf("no asset %q", name)
			}
			return Prefix + "static/" + name + "?v=" + v, nil
		},
		"when":     when,
		"ago":      ago,
		"pretty":   pretty,
		"isolate":  isolate,
		"plain":    plainBidi,
		"latency":  func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() },
		"statusOK": func(status int) bool { return status >= 200 && status < 300 },
		"backlog":  backlog,
		"mib":      func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) },
		"field":    func(id, label, value string) copyField { return copyField{id, label, value} },
	}
	for _, name := range templateNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing the console's %s page: %w", name, err)
		}
		p.t[name] = t
	}
	return p, nil
}

// render writes a page. It renders into a buffer first, so that a
// template's failure is a clean 500, not half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	var b bytes.Buffer
	if err := c.pages.t[name].ExecuteTemplate(&b, "layout", p); err != nil {
		c.log.ErrorContext(r.Context(), "rendering a console page", "request_id", requestIDOf(r.Context()), "page", name, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "internal error; the relay's log has the details under request_id %s\n", requestIDOf(r.Context()))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// GET /ui/static/{file}: an asset, cached for good when asked for with
// its current version.
func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	b, err := fs.ReadFile(assets, "assets/static/"+name)
	if err != nil || strings.Contains(name, "/") {
		c.fail(w, r, nil, errorf(http.StatusNotFound, "no such file"))
		return
	}
	if v := r.URL.Query().Get("v"); v != "" && v == c.pages.versions[name] {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
}

// copyField is a value to copy, with its label.
type copyField struct{ ID, Label, Value string }

// when shows a time in UTC to the second; the zero time is "never".
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
}

// notSetUp is what the console says of a sink's backlog on a relay that
// has not set the sink up (sinks.Status.NotSetUp).
const notSetUp = "not known here: this relay has not set the sink up and delivers nothing for it (its setup failed; see its log); a reload or restart tries again"

// backlog says what a sink has not delivered yet: its events in the
// stream and in the workers, the resources parked (whose events wait to
// be read back from the stream: while a receiver is down, most of the
// backlog), and how old the oldest undelivered event is.
func backlog(now time.Time, st sinks.Status) string {
	if st.NotSetUp {
		return notSetUp
	}
	s := fmt.Sprintf("%d events", st.Pending+uint64(st.InFlight))
	if st.Parked > 0 {
		s += fmt.Sprintf(", %d resources parked", st.Parked)
	}
	if st.OldestUndelivered != nil {
		s += ", oldest stored " + ago(now, *st.OldestUndelivered)
	}
	return s
}

// ago says how long before now t was, or how long after now it is.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, " from now"
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds%s", int(d.Seconds()), suffix)
	case d < time.Hour:
		return fmt.Sprintf("%dm%s", int(d.Minutes()), suffix)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%s", int(d.Hours()), suffix)
	}
	return fmt.Sprintf("%dd%s", int(d.Hours()/24), suffix)
}

// pretty indents JSON for reading, its bidirectional control characters
// escaped (escapeBidi).
func pretty(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return escapeBidi(string(raw))
	}
	return escapeBidi(b.String())
}
