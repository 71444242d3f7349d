package demo

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// OpenVEX is an OpenVEX v0.2.0 document (https://github.com/openvex/spec) saying that none of cves
// affects the image with digest, as `vexctl create --product pkg:oci/... --status not_affected` writes it.
func OpenVEX(repo, digest string, cves []string, justification string) map[string]any {
	product := map[string]any{"@id": "pkg:oci/" + repo[strings.LastIndex(repo, "/")+1:] + "@" + strings.Replace(digest, ":", "%3A", 1)}
	var statements []any
	for _, cve := range cves {
		statements = append(statements, map[string]any{
			"vulnerability": map[string]any{"name": cve}, "products": []any{product},
			"status": "not_affected", "justification": justification,
		})
	}
	return map[string]any{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://portcullis.dev/demo/vex/" + digest,
		"author": "Portcullis demo", "timestamp": "2026-12-01T00:00:00Z", "version": 1, "statements": statements}
}

// AttestVEX attaches doc to repo@digest on the registry at host as `cosign attest --key --type
// openvex --tlog-upload=false` does (legacy `.att` format), signed by signer.
func AttestVEX(host, repo, digest string, signer signature.Signer, doc map[string]any) error {
	ref, err := name.NewDigest(host+"/"+repo+"@"+digest, name.Insecure)
	if err != nil {
		return err
	}
	if err := verifytest.AttestImage(ref, signer, "https://openvex.dev/ns", doc); err != nil {
		return fmt.Errorf("attesting VEX for %s: %w", ref, err)
	}
	return nil
}
