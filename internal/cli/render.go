package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	_ "embed"
)

// Formats of `portcullis report -o`.
var reportFormats = []string{"markdown", "csv", "json", "html"}

// Render writes rep in format (markdown, csv, json or html).
func Render(w io.Writer, rep Report, format string) error {
	switch format {
	case "markdown", "md":
		return renderMarkdown(w, rep)
	case "csv":
		return renderCSV(w, rep)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "html":
		return renderHTML(w, rep)
	}
	return fmt.Errorf("unknown format %q: want one of %s", format, strings.Join(reportFormats, ", "))
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// age is how long ago t was, in whole days ("12 d"), hours under a day.
func age(now, t time.Time) string {
	d := now.Sub(t)
	if d < 24*time.Hour {
		return fmt.Sprintf("%d h", int(d.Hours()))
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// mdCell escapes a Markdown table cell.
func mdCell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

func renderMarkdown(w io.Writer, rep Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Portcullis compliance report\n\nGenerated %s.\n", rep.Generated.Format(time.RFC3339))
	if len(rep.Registries) == 0 {
		b.WriteString("\nNo Registry found.\n")
	}
	for _, r := range rep.Registries {
		fmt.Fprintf(&b, "\n## Registry %s/%s\n\n%s, %d images.\n\n", r.Namespace, r.Name, r.URL, r.Images)
		b.WriteString("| Policy | Mode | Compliant | Non-compliant | Oldest non-compliance |\n|---|---|---:|---:|---|\n")
		for _, p := range r.Policies {
			oldest := "-"
			if p.OldestNonCompliance != nil {
				oldest = fmt.Sprintf("%s (%s)", day(*p.OldestNonCompliance), age(rep.Generated, *p.OldestNonCompliance))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %s |\n", mdCell(p.Name), p.Mode, p.Compliant, p.NonCompliant, oldest)
		}
		for _, p := range r.Policies {
			if len(p.NonCompliantImages) > 0 {
				fmt.Fprintf(&b, "\n### Non-compliant under %s\n\n| Image | Tags | Reasons | Since |\n|---|---|---|---|\n", mdCell(p.Name))
				for _, i := range p.NonCompliantImages {
					fmt.Fprintf(&b, "| %s@%s | %s | %s | %s |\n", mdCell(i.Repository), i.Digest, mdCell(strings.Join(i.Tags, ", ")),
						mdCell(strings.Join(i.Reasons, ", ")), day(i.Since))
				}
			}
			if len(p.ExpiringExceptions) > 0 {
				fmt.Fprintf(&b, "\n### Exceptions of %s expiring within 30 days\n\n| Vulnerability | Expires | Reason |\n|---|---|---|\n", mdCell(p.Name))
				for _, e := range p.ExpiringExceptions {
					fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCell(e.ID), day(e.Expires), mdCell(e.Reason))
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// renderCSV writes one row per (Registry, policy, non-compliant image), and one row with an empty
// image for a policy every image passes, so counts survive in a spreadsheet.
func renderCSV(w io.Writer, rep Report) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"namespace", "registry", "policy", "mode", "compliant", "non_compliant", "repository", "digest", "tags", "reasons", "non_compliant_since"})
	for _, r := range rep.Registries {
		for _, p := range r.Policies {
			head := []string{r.Namespace, r.Name, p.Name, p.Mode, strconv.Itoa(p.Compliant), strconv.Itoa(p.NonCompliant)}
			if len(p.NonCompliantImages) == 0 {
				_ = cw.Write(append(head, "", "", "", "", ""))
			}
			for _, i := range p.NonCompliantImages {
				_ = cw.Write(append(append([]string{}, head...), i.Repository, i.Digest, strings.Join(i.Tags, " "), strings.Join(i.Reasons, " "),
					i.Since.Format(time.RFC3339)))
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

//go:embed report.html.tmpl
var reportHTML string

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"day":     day,
	"rfc3339": func(t time.Time) string { return t.Format(time.RFC3339) },
	"age":     age,
	"join":    strings.Join,
	"chart":   chart,
}).Parse(reportHTML))

func renderHTML(w io.Writer, rep Report) error { return htmlTemplate.Execute(w, rep) }

// chartData is an inline SVG polyline of compliance over time, a step at each change: x across the history's time span,
// y the share compliant (0 at the bottom, 100 % at the top), in a 600 × 160 box.
type chartData struct {
	Points string
	First  string
	Last   string
	Labels []chartLabel
}

type chartLabel struct {
	X, Y float64
	Text string
}

func chart(h []Point) chartData {
	if len(h) == 0 {
		return chartData{}
	}
	const width, height = 600.0, 160.0
	t0, t1 := h[0].Time, h[len(h)-1].Time
	span := t1.Sub(t0).Seconds()
	var pts []string
	var c chartData
	prevY := 0.0
	for _, p := range h {
		x := 0.0
		if span > 0 {
			x = p.Time.Sub(t0).Seconds() / span * width
		}
		share := 0.0
		if p.Judged > 0 {
			share = float64(p.Compliant) / float64(p.Judged)
		}
		y := height - share*height
		if len(pts) > 0 {
			// A step: the share holds until the change.
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, prevY))
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		prevY = y
	}
	last := h[len(h)-1]
	share := 0.0
	if last.Judged > 0 {
		share = float64(last.Compliant) / float64(last.Judged)
	}
	c.Points = strings.Join(pts, " ")
	c.First, c.Last = day(t0), day(t1)
	c.Labels = []chartLabel{{X: width, Y: height - share*height, Text: fmt.Sprintf("%d of %d compliant", last.Compliant, last.Judged)}}
	return c
}
