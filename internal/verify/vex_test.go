package verify

import (
	"context"
	"crypto"
	"encoding/json"
	"strings"
	"testing"

	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// openVEXDoc is an OpenVEX v0.2.0 document as vexctl writes it, saying one CVE does not affect the
// image with digest.
func openVEXDoc(digest, cve string) map[string]any {
	return map[string]any{
		"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.test/vex/1", "author": "Security",
		"timestamp": "2026-11-01T00:00:00Z", "version": 1,
		"statements": []any{map[string]any{
			"vulnerability": map[string]any{"name": cve},
			"products":      []any{map[string]any{"@id": "pkg:oci/app@" + strings.Replace(digest, ":", "%3A", 1)}},
			"status":        "not_affected", "justification": "vulnerable_code_not_in_execute_path",
		}},
	}
}

// TestVEXAttestations checks which OpenVEX attestations reach the policy: those a VEX authority
// signed for the digest, in the legacy `.att` format (cosign attest --type openvex) and as sigstore
// bundles (cosign v3), whatever the OpenVEX predicate type's version; the others are listed as
// ignored, never applied; a verifier without VEX authorities collects none.
func TestVEXAttestations(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	vendor, stranger := newKey(t, "p256", crypto.SHA256), newKey(t, "p256", crypto.SHA256)
	bundleVendor := verifytest.NewBundleSigner(t)
	spec := keyPolicy("vendor", "bundle-vendor")
	one := int32(1)
	spec.Require = &one
	material := Material{"vendor": vendor.pubPEM, "bundle-vendor": bundleVendor.PublicPEM}

	d := reg.pushImage(t, "app")
	attest(t, d, vendor.signer, "https://openvex.dev/ns", openVEXDoc(d.DigestStr(), "CVE-2021-38561"))                 // cosign attest --type openvex
	bundleVendor.Attest(t, d, "https://openvex.dev/ns/v0.2.0", openVEXDoc(d.DigestStr(), "CVE-2022-32149"))            // cosign v3, vexctl's type
	attest(t, d, stranger.signer, "https://openvex.dev/ns/v0.2.0", openVEXDoc(d.DigestStr(), "CVE-2026-56852"))        // nobody we trust
	attest(t, d, vendor.signer, "https://slsa.dev/provenance/v1", map[string]any{"buildDefinition": map[string]any{}}) // not VEX

	v := compile(t, spec, material)
	if err := v.WithVEX([]string{"vendor", "bundle-vendor"}); err != nil {
		t.Fatal(err)
	}
	res, err := v.Verify(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	byAuthority := map[string]string{}
	for _, doc := range res.VEX {
		var parsed struct {
			Statements []struct {
				Vulnerability struct{ Name string } `json:"vulnerability"`
			} `json:"statements"`
		}
		if err := json.Unmarshal(doc.Document, &parsed); err != nil || len(parsed.Statements) != 1 || !strings.HasPrefix(doc.Source, "sha256:") {
			t.Fatalf("document %+v: %v", doc, err)
		}
		byAuthority[doc.Authority] = parsed.Statements[0].Vulnerability.Name
	}
	if len(res.VEX) != 2 || byAuthority["vendor"] != "CVE-2021-38561" || byAuthority["bundle-vendor"] != "CVE-2022-32149" {
		t.Fatalf("VEX documents by authority %v, want the legacy one by vendor and the bundle by bundle-vendor", byAuthority)
	}
	if len(res.VEXIgnored) != 1 || !strings.Contains(res.VEXIgnored[0], "not signed for this digest by a VEX authority") {
		t.Fatalf("ignored %q, want the stranger's document", res.VEXIgnored)
	}

	plain, err := compile(t, spec, material).Verify(ctx, d)
	if err != nil || len(plain.VEX) != 0 || len(plain.VEXIgnored) != 0 {
		t.Fatalf("without VEX authorities: %d documents, %d ignored, %v", len(plain.VEX), len(plain.VEXIgnored), err)
	}

	other := reg.pushImage(t, "other")
	copied := compile(t, spec, material)
	if err := copied.WithVEX([]string{"vendor", "bundle-vendor"}); err != nil {
		t.Fatal(err)
	}
	res, err = copied.Verify(ctx, other)
	if err != nil || len(res.VEX) != 0 {
		t.Fatalf("another digest: %d documents (the statements name the first image), %v", len(res.VEX), err)
	}
	if err := copied.WithVEX([]string{"nobody"}); err == nil {
		t.Fatal("WithVEX accepted an unknown authority")
	}
}
