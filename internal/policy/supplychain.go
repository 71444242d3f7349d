package policy

import "strings"

// Supply-chain tags are the tags cosign and the OCI referrers fallback push next to an image:
// "sha256-<64 hex>.sig", ".att", ".sbom" (cosign's tag scheme) and "sha256-<64 hex>" (the
// referrers tag schema of the OCI distribution spec, "Referrers Tag Schema"). Freezing them would
// make signing and attesting fail.
var supplyChainSuffixes = []string{"", ".sig", ".att", ".sbom"}

// MatchesSupplyChainTag reports whether the doublestar tag pattern matches at least one
// supply-chain tag, for any digest: not one example digest, but the whole family. It decides the
// intersection of the pattern with the family exactly, for every doublestar feature a tag pattern
// can use (*, **, ?, [class], [^class] and [!class], {alternatives}, \ escapes), by walking the
// pattern against the family's shape: "sha256-", 64 positions of [0-9a-f], then a suffix.
func MatchesSupplyChainTag(pattern string) bool {
	for _, p := range expandBraces(pattern) {
		for _, suffix := range supplyChainSuffixes {
			if globMeetsShape(p, supplyChainShape(suffix)) {
				return true
			}
		}
	}
	return false
}

// shapePos is one character position of a shape: the set of characters allowed there.
type shapePos func(c rune) bool

func supplyChainShape(suffix string) []shapePos {
	var s []shapePos
	lit := func(r rune) shapePos { return func(c rune) bool { return c == r } }
	for _, r := range "sha256-" {
		s = append(s, lit(r))
	}
	hex := func(c rune) bool { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') }
	for range 64 {
		s = append(s, hex)
	}
	for _, r := range suffix {
		s = append(s, lit(r))
	}
	return s
}

// globToken is one element of a brace-free pattern: a star (any run), or one position with the
// characters it accepts.
type globToken struct {
	star   bool
	accept func(c rune) bool
	any    bool // "?": every character
}

// tokens reads a brace-free doublestar pattern. A pattern that does not parse yields ok false.
func tokens(p string) (out []globToken, ok bool) {
	rs := []rune(p)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; c {
		case '*':
			for i+1 < len(rs) && rs[i+1] == '*' {
				i++
			}
			out = append(out, globToken{star: true})
		case '?':
			out = append(out, globToken{any: true})
		case '\\':
			if i+1 >= len(rs) {
				return nil, false
			}
			i++
			r := rs[i]
			out = append(out, globToken{accept: func(x rune) bool { return x == r }})
		case '[':
			j := i + 1
			negate := j < len(rs) && (rs[j] == '^' || rs[j] == '!')
			if negate {
				j++
			}
			var ranges [][2]rune
			for ; j < len(rs) && rs[j] != ']'; j++ {
				lo := rs[j]
				if lo == '\\' && j+1 < len(rs) {
					j++
					lo = rs[j]
				}
				hi := lo
				if j+2 < len(rs) && rs[j+1] == '-' && rs[j+2] != ']' {
					hi = rs[j+2]
					j += 2
				}
				ranges = append(ranges, [2]rune{lo, hi})
			}
			if j >= len(rs) {
				return nil, false
			}
			i = j
			out = append(out, globToken{accept: func(x rune) bool {
				in := false
				for _, r := range ranges {
					in = in || (x >= r[0] && x <= r[1])
				}
				return in != negate
			}})
		default:
			out = append(out, globToken{accept: func(x rune) bool { return x == c }})
		}
	}
	return out, true
}

// globMeetsShape reports whether the brace-free pattern p matches some string of the given shape.
// A position of the shape and one of the pattern meet when some character passes both; a star
// takes any number of positions (tags hold no '/', so * and ** are the same here).
func globMeetsShape(p string, shape []shapePos) bool {
	toks, ok := tokens(p)
	if !ok {
		return false
	}
	meets := func(t globToken, s shapePos) bool {
		if t.any {
			return true
		}
		for c := rune(0x21); c < 0x7f; c++ { // tags are printable ASCII
			if s(c) && t.accept(c) {
				return true
			}
		}
		return false
	}
	// can[i][j]: tokens[i:] can match shape[j:].
	can := make([][]bool, len(toks)+1)
	for i := range can {
		can[i] = make([]bool, len(shape)+1)
	}
	can[len(toks)][len(shape)] = true
	for i := len(toks) - 1; i >= 0; i-- {
		for j := len(shape); j >= 0; j-- {
			t := toks[i]
			switch {
			case t.star:
				can[i][j] = can[i+1][j] || (j < len(shape) && can[i][j+1])
			case j < len(shape):
				can[i][j] = meets(t, shape[j]) && can[i+1][j+1]
			}
		}
	}
	return can[0][0]
}

// expandBraces expands doublestar's {a,b} alternatives (nested too) into brace-free patterns.
func expandBraces(p string) []string {
	depth, start := 0, -1
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '{':
			if depth == 0 {
				start = i
			}
			depth++
		case '}':
			if depth == 0 {
				continue
			}
			depth--
			if depth == 0 {
				var out []string
				for _, alt := range splitTopLevel(p[start+1 : i]) {
					out = append(out, expandBraces(p[:start]+alt+p[i+1:])...)
				}
				return out
			}
		}
	}
	return []string{p}
}

// splitTopLevel splits s at the commas outside nested braces.
func splitTopLevel(s string) []string {
	var out []string
	depth, last := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[last:i])
				last = i + 1
			}
		}
	}
	return append(out, s[last:])
}

// HarborSupplyChainTags is the doublestar pattern a Harbor immutable rule excludes when a policy
// makes every tag immutable: every supply-chain tag starts with "sha256-". A user tag that starts
// with "sha256-" is left mutable too; the prefix is the referrers tag schema's, not a tag name
// people choose.
const HarborSupplyChainTags = "sha256-*"

// HarborTagSelector is one tag selector of a Harbor immutable tag rule (Harbor's
// src/pkg/immutable/match/rule: a rule is decided by its first tag selector alone, with the
// decoration "matches" or "excludes").
type HarborTagSelector struct {
	Pattern    string
	Decoration string // "matches" or "excludes"
}

// HarborImmutableTags maps a spec.immutability.tags pattern onto one Harbor tag selector that
// never freezes a supply-chain tag. A pattern that matches no supply-chain tag maps to itself
// ("matches"); a pattern that matches every tag ("*", "**") maps to "excludes sha256-*", which is
// how Harbor's UI ("excluding") and Terraform's tag_excluding write it. Any other pattern that
// meets the supply-chain family would need "matches P and excludes sha256-*", which one Harbor
// selector cannot say: ok is false.
func HarborImmutableTags(pattern string) (sel HarborTagSelector, ok bool) {
	if !MatchesSupplyChainTag(pattern) {
		return HarborTagSelector{Pattern: pattern, Decoration: "matches"}, true
	}
	if strings.Trim(pattern, "*") == "" {
		return HarborTagSelector{Pattern: HarborSupplyChainTags, Decoration: "excludes"}, true
	}
	return HarborTagSelector{}, false
}
