package cli

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds the browser: PORTCULLIS_CHROMIUM, else Debian's chromium on PATH (.ci/run
// installs it).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PORTCULLIS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no headless browser: install Debian's chromium (apt-get install chromium; .ci/run does) or set PORTCULLIS_CHROMIUM")
	return ""
}

// headless runs the browser on page with args and returns its stdout.
func headless(t *testing.T, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	profile := t.TempDir()
	cmd := exec.CommandContext(ctx, chromium(t), append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + profile, "--window-size=1000,1600"}, append(args, "file://"+page)...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, errOut.String())
	}
	return out.Bytes()
}

// TestReportHTMLInBrowser renders `report -o html` in headless Chromium: the DOM the browser built
// holds the summary and the non-compliant images, and the screenshot shows the compliance chart's
// line and the failing count in their colours (the SVG and the CSS were drawn, from the page alone:
// it loads nothing else).
func TestReportHTMLInBrowser(t *testing.T) {
	c := inventory(t)
	code, html, errOut := run(t, c, "report", "-o", "html")
	if code != ExitOK {
		t.Fatalf("report -o html: exit %d: %s", code, errOut)
	}
	if strings.Contains(html, "http://") || strings.Contains(html, "<script") || strings.Contains(html, "<link") {
		t.Errorf("the page is not self-contained")
	}
	page := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(page, []byte(html), 0o600); err != nil {
		t.Fatal(err)
	}

	dom := string(headless(t, page, "--dump-dom"))
	for _, want := range []string{
		`<tr data-policy="production"><td>production</td><td>Enforce</td><td class="n compliant">1</td><td class="n noncompliant fail">2</td><td>2026-10-17 (45 d)</td></tr>`,
		`<td class="reasons">VulnerabilityThresholdExceeded</td>`,
		`<td>CVE-2024-0001</td><td>2026-12-11</td>`,
		`aria-label="Compliance of production over time"`,
		`>1 of 3 compliant</text>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM Chromium built lacks %s", want)
		}
	}
	if n := strings.Count(dom, `<polyline class="compliance"`); n != 2 {
		t.Errorf("%d charts in the DOM; want 2 (one per policy)", n)
	}

	dir := t.TempDir()
	shot := filepath.Join(dir, "report.png")
	headless(t, page, "--screenshot="+shot, "--hide-scrollbars")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// The chart line (#2e7d32) and the failing count (#b00020) are drawn.
	green, red := 0, 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			switch {
			case near(r, 0x2e) && near(g, 0x7d) && near(bl, 0x32):
				green++
			case near(r, 0xb0) && near(g, 0x00) && near(bl, 0x20):
				red++
			}
		}
	}
	if green < 200 || red < 5 {
		t.Errorf("the screenshot has %d pixels of the chart's green and %d of the failing red; want a drawn line (200+) and text (5+)", green, red)
	}
}

func near(v uint32, want int) bool { d := int(v) - want; return d > -24 && d < 24 }
