package controller

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/reports"
)

// servedMetrics returns name → help of every metric the manager serves, from the collectors'
// descriptions (a vector without series yet is included, unlike in a scrape).
func servedMetrics(t *testing.T) map[string]string {
	t.Helper()
	descRE := regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*")`)
	out := map[string]string{}
	for _, c := range slices.Concat(collectors, registry.Collectors(), receiver.Collectors(), reports.Collectors()) {
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			name, _ := strconv.Unquote(m[1])
			help, _ := strconv.Unquote(m[2])
			out[name] = help
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metrics: %v", len(out), out)
	}
	return out
}

// TestREADMEListsEveryMetric: the README's metrics table names every served metric with its exact
// help text, and nothing else.
func TestREADMEListsEveryMetric(t *testing.T) {
	served := servedMetrics(t)
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rowRE := regexp.MustCompile("(?m)^\\| `(portcullis_[a-z0-9_]+)` \\|[^|]*\\|[^|]*\\| (.*?) \\|$")
	listed := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = m[2]
	}
	for name, help := range served {
		switch got, ok := listed[name]; {
		case !ok:
			t.Errorf("README's metrics table lacks %s (help %q)", name, help)
		case got != help:
			t.Errorf("README lists %s with help %q; the manager serves %q", name, got, help)
		}
	}
	for name := range listed {
		if _, ok := served[name]; !ok {
			t.Errorf("README lists %s, which the manager does not serve", name)
		}
	}
}

// TestGrafanaDashboard checks config/grafana/portcullis.json: valid JSON with panels, every query
// names only metrics the manager serves (histogram series by their _bucket/_sum/_count names), and the
// four views the dashboard exists for are there: compliance by policy, findings by severity, scan
// throughput and registry errors.
func TestGrafanaDashboard(t *testing.T) {
	served := servedMetrics(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "grafana", "portcullis.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("config/grafana/portcullis.json is not valid JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard needs a title, a uid and panels; got %q %q %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	metricRE := regexp.MustCompile(`\bportcullis_[a-z0-9_]+`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := metricRE.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no Portcullis metric", p.Title, q.Expr)
			}
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") || strings.Count(q.Expr, "{") != strings.Count(q.Expr, "}") {
				t.Errorf("panel %q: unbalanced query %q", p.Title, q.Expr)
			}
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if trimmed, ok := strings.CutSuffix(n, suffix); ok && served[trimmed] != "" {
						base = trimmed
					}
				}
				if _, ok := served[base]; !ok {
					t.Errorf("panel %q queries %s, which the manager does not serve (served: %v)", p.Title, n, slices.Sorted(maps.Keys(served)))
				}
				used[base] = true
			}
		}
	}
	for _, m := range []string{"portcullis_images", "portcullis_image_findings", "portcullis_scans_total", "portcullis_registry_requests_total"} {
		if !used[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
}
