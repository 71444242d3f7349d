package policy

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// VEXDocument is a signed OpenVEX document (https://github.com/openvex/spec) that applies to the
// digest: Source is the attestation that carried it, Authority who signed it.
type VEXDocument struct {
	Source, Authority string
	Document          []byte
}

// Suppression is a vulnerability finding a VEX statement removed from the thresholds.
type Suppression struct {
	ID, Package, Status, Justification, Source, Authority string
}

// openVEX is the part of an OpenVEX document we read. Versions 0.0.1 and 0.2.0 both decode: a
// vulnerability is a name or an object (name, aliases), a product an @id string or an object
// (@id, subcomponents).
type openVEX struct {
	Timestamp  string         `json:"timestamp"`
	Statements []vexStatement `json:"statements"`
}

type vexStatement struct {
	Vulnerability  vexVulnerability `json:"vulnerability"`
	Products       []vexProduct     `json:"products"`
	Status         string           `json:"status"`
	Justification  string           `json:"justification"`
	Timestamp      string           `json:"timestamp"`
	LastUpdated    string           `json:"last_updated"`
	Subcomponents  []vexProduct     `json:"subcomponents"` // v0.0.1: at the statement level
	time           time.Time
	source, signer string
}

type vexVulnerability struct {
	Name    string   `json:"name"`
	ID      string   `json:"@id"`
	Aliases []string `json:"aliases"`
}

func (v *vexVulnerability) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v.Name = s
		return nil
	}
	type plain vexVulnerability
	return json.Unmarshal(b, (*plain)(v))
}

type vexProduct struct {
	ID            string       `json:"@id"`
	Subcomponents []vexProduct `json:"subcomponents"`
}

func (p *vexProduct) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		p.ID = s
		return nil
	}
	type plain vexProduct
	return json.Unmarshal(b, (*plain)(p))
}

// names is every identifier of the statement's vulnerability.
func (s vexStatement) names() []string {
	out := append([]string{s.Vulnerability.Name, s.Vulnerability.ID}, s.Vulnerability.Aliases...)
	return out
}

// ApplyVEX removes from findings those a statement of docs says do not affect the image with the
// given digest ("sha256:<hex>"): status `not_affected` or `fixed`, for the finding's vulnerability
// (name or alias), and a product that is this image (an @id naming the digest, e.g.
// `pkg:oci/app@sha256%3A...`) with no subcomponents or one that is the finding's package, or a
// product that is the package itself (a purl of its name). Where statements disagree, the latest
// (statement timestamp, else the document's) decides, as OpenVEX specifies. A document that does not
// parse is returned in problems and applies nothing.
func ApplyVEX(findings []Finding, docs []VEXDocument, digest string) (kept []Finding, suppressed []Suppression, problems []string) {
	var statements []vexStatement
	for _, d := range docs {
		var doc openVEX
		if err := json.Unmarshal(d.Document, &doc); err != nil {
			problems = append(problems, d.Source+": not an OpenVEX document: "+err.Error())
			continue
		}
		docTime := parseTime(doc.Timestamp)
		for _, st := range doc.Statements {
			st.time = docTime
			if t := parseTime(firstNonEmpty(st.LastUpdated, st.Timestamp)); !t.IsZero() {
				st.time = t
			}
			st.source, st.signer = d.Source, d.Authority
			statements = append(statements, st)
		}
	}
	if len(statements) == 0 {
		return findings, nil, problems
	}
	for _, f := range findings {
		var latest *vexStatement
		for i := range statements {
			st := &statements[i]
			if !matchesVulnerability(st, f.ID) || !appliesTo(st, f, digest) {
				continue
			}
			if latest == nil || !st.time.Before(latest.time) {
				latest = st
			}
		}
		if latest != nil && (latest.Status == "not_affected" || latest.Status == "fixed") {
			suppressed = append(suppressed, Suppression{ID: f.ID, Package: f.Package, Status: latest.Status,
				Justification: latest.Justification, Source: latest.source, Authority: latest.signer})
			continue
		}
		kept = append(kept, f)
	}
	return kept, suppressed, problems
}

func matchesVulnerability(st *vexStatement, id string) bool {
	for _, n := range st.names() {
		if n != "" && strings.EqualFold(n, id) {
			return true
		}
	}
	return false
}

// appliesTo reports whether one of the statement's products is the image (with the finding's
// package among its subcomponents, when it lists any) or the finding's package.
func appliesTo(st *vexStatement, f Finding, digest string) bool {
	for _, p := range st.Products {
		subs := p.Subcomponents
		if len(subs) == 0 {
			subs = st.Subcomponents
		}
		switch {
		case namesDigest(p.ID, digest):
			if len(subs) == 0 {
				return true
			}
			for _, s := range subs {
				if purlNames(s.ID, f.Package) {
					return true
				}
			}
		case purlNames(p.ID, f.Package):
			return true
		}
	}
	return false
}

// namesDigest reports whether a product @id names the digest ("sha256:<hex>", also URL-encoded as
// in a pkg:oci purl).
func namesDigest(id, digest string) bool {
	if digest == "" || id == "" {
		return false
	}
	if dec, err := url.PathUnescape(id); err == nil {
		id = dec
	}
	return strings.Contains(id, digest)
}

// purlNames reports whether a package URL (https://github.com/package-url/purl-spec) is of the
// package named pkg: its name, or namespace/name (Go modules' paths), whatever the version.
func purlNames(purl, pkg string) bool {
	if pkg == "" || !strings.HasPrefix(purl, "pkg:") {
		return false
	}
	rest := strings.TrimPrefix(purl, "pkg:")
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[:i]
	}
	_, path, ok := strings.Cut(rest, "/") // drop the type
	if !ok {
		return false
	}
	if dec, err := url.PathUnescape(path); err == nil {
		path = dec
	}
	if path == pkg {
		return true
	}
	name := path[strings.LastIndex(path, "/")+1:]
	return name == pkg
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
