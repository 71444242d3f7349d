package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// ImageAttestationName is the name of the ImageAttestation that the Registry registryName keeps for
// repository@digest: deterministic, DNS-safe and at most 63 characters. It is the repository's last
// path segment (lower-cased, runs of other characters replaced by a dash, up to 40 characters), a
// dash, and 16 hex digits of sha256(registryName NUL repository NUL digest), e.g.
// `api-3f1c9a0b2d4e5f60`. So a digest is found by name (a cache Get), without an index.
func ImageAttestationName(registryName, repository, digest string) string {
	base := repository[strings.LastIndex(repository, "/")+1:]
	base = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(base), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	if base == "" {
		base = "image"
	}
	sum := sha256.Sum256([]byte(registryName + "\x00" + repository + "\x00" + digest))
	return base + "-" + hex.EncodeToString(sum[:])[:16]
}
