package policy

import (
	"strings"
	"testing"
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
