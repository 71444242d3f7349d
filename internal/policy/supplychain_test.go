package policy

import (
	"strings"
	"testing"

	"github.com/bmatcuk/doublestar/v4"
)

// TestMatchesSupplyChainTag: the check covers every digest, not one example, and agrees with
// doublestar's own matching wherever a concrete supply-chain tag is at hand.
func TestMatchesSupplyChainTag(t *testing.T) {
	for pattern, want := range map[string]bool{
		"**": true, "*": true, "sha256-*": true, "*.sig": true, "*.att": true, "*.sbom": true,
		"sha256-f*.sig":                     true, // the digest starts with f: an example digest starting with 0 missed it
		"sha256-[a-f]*":                     true,
		"s?a256-*":                          true,
		"{v*,*.att}":                        true,
		"{v*,{rc-*,*.sbom}}":                true,
		"*-*":                               true,
		"sha256-" + strings.Repeat("?", 64): true, // the referrers fallback tag exactly
		"v*":                                false, "release-*": false, "*.sbomx": false, "sha512-*": false,
		"sha256-[g-z]*":                     false, // hex never holds g-z
		"sha256-[^0-9a-f]*":                 false,
		"sha256-???":                        false, // too short for a digest
		"sha256-" + strings.Repeat("?", 63): false,
		"{v*,latest}":                       false,
		"*[A-Z]*":                           false, // digests are lower case
	} {
		if got := MatchesSupplyChainTag(pattern); got != want {
			t.Errorf("MatchesSupplyChainTag(%q) = %v, want %v", pattern, got, want)
		}
	}
	// Against doublestar itself, on concrete tags of a few digests.
	for _, hex := range []string{strings.Repeat("0", 64), strings.Repeat("f", 64), strings.Repeat("a1", 32)} {
		for _, suffix := range supplyChainSuffixes {
			tag := "sha256-" + hex + suffix
			for _, pattern := range []string{"**", "sha256-f*", "*.sig", "sha256-a1*.att", "sha256-0*"} {
				if MatchAny([]string{pattern}, tag) && !MatchesSupplyChainTag(pattern) {
					t.Errorf("%q matches %s but MatchesSupplyChainTag says no", pattern, tag)
				}
			}
		}
	}
}

// TestHarborImmutableTags maps immutability patterns onto one Harbor tag selector and evaluates
// the selector the way Harbor's immutable matcher does (doublestar, "excludes" inverts): the
// selector keeps the pattern's ordinary tags and never freezes a supply-chain tag.
func TestHarborImmutableTags(t *testing.T) {
	digest := strings.Repeat("f0", 32)
	supplyChain := []string{"sha256-" + digest, "sha256-" + digest + ".sig", "sha256-" + digest + ".att", "sha256-" + digest + ".sbom"}
	immutable := func(sel HarborTagSelector, tag string) bool {
		m, err := doublestar.Match(sel.Pattern, tag)
		if err != nil {
			t.Fatal(err)
		}
		return m == (sel.Decoration == "matches")
	}
	for _, c := range []struct {
		pattern string
		ok      bool
		frozen  []string // ordinary tags the rule must freeze
		free    []string // ordinary tags it must leave alone
	}{
		{pattern: "v*", ok: true, frozen: []string{"v1", "v2.0.1"}, free: []string{"latest", "1.0"}},
		{pattern: "**", ok: true, frozen: []string{"v1", "latest", "release-1.sig"}},
		{pattern: "*", ok: true, frozen: []string{"v1", "latest"}},
		{pattern: "***", ok: true, frozen: []string{"main"}},
		{pattern: "s*", ok: false},
		{pattern: "*.sig", ok: false},
		{pattern: "sha256-*", ok: false},
	} {
		sel, ok := HarborImmutableTags(c.pattern)
		if ok != c.ok {
			t.Errorf("%q: ok %v, want %v", c.pattern, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if sel.Decoration != "matches" && sel.Decoration != "excludes" {
			t.Errorf("%q: decoration %q", c.pattern, sel.Decoration)
		}
		for _, tag := range supplyChain {
			if immutable(sel, tag) {
				t.Errorf("%q -> %+v freezes the supply-chain tag %s", c.pattern, sel, tag)
			}
		}
		for _, tag := range c.frozen {
			if !immutable(sel, tag) {
				t.Errorf("%q -> %+v leaves %q mutable", c.pattern, sel, tag)
			}
		}
		for _, tag := range c.free {
			if immutable(sel, tag) {
				t.Errorf("%q -> %+v freezes %q", c.pattern, sel, tag)
			}
		}
	}
}
