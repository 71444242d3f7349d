package verify

import (
	"context"
	"crypto"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

const slsaV1 = "https://slsa.dev/provenance/v1"

// attest attaches an in-toto statement about subject, in a DSSE envelope signed by signer, as
// `cosign attest --key ... --tlog-upload=false` does.
func attest(t *testing.T, subject name.Digest, signer signature.Signer, predicateType string, predicate any) {
	t.Helper()
	if err := verifytest.AttestImage(subject, signer, predicateType, predicate); err != nil {
		t.Fatal(err)
	}
}

func provenance(buildType string) map[string]any {
	return map[string]any{"buildDefinition": map[string]any{"buildType": buildType}, "runDetails": map[string]any{}}
}

func TestAttestations(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	key, other := newKey(t, "p256", crypto.SHA256), newKey(t, "p256", crypto.SHA256)
	const wantType = "https://example.test/build/v1"
	cond := `predicate.buildDefinition.buildType == "` + wantType + `"`
	cases := []struct {
		name      string
		setup     func(name.Digest)
		condition string
		reason    string // empty: verified
	}{
		{"present, condition true", func(d name.Digest) { attest(t, d, key.signer, slsaV1, provenance(wantType)) }, cond, ""},
		{"present, no condition", func(d name.Digest) { attest(t, d, key.signer, slsaV1, provenance("other")) }, "", ""},
		{"present, condition false", func(d name.Digest) { attest(t, d, key.signer, slsaV1, provenance("https://other.test/v1")) }, cond, ReasonAttestationConditionFailed},
		{"condition over a missing field", func(d name.Digest) { attest(t, d, key.signer, slsaV1, map[string]any{}) }, cond, ReasonAttestationConditionFailed},
		{"wrong predicate type", func(d name.Digest) { attest(t, d, key.signer, "https://spdx.dev/Document", provenance(wantType)) }, cond, ReasonAttestationMissing},
		{"signed by another key", func(d name.Digest) { attest(t, d, other.signer, slsaV1, provenance(wantType)) }, cond, ReasonAttestationMissing},
		{"absent", func(name.Digest) {}, cond, ReasonAttestationMissing},
		{"one bad, one good", func(d name.Digest) {
			attest(t, d, key.signer, slsaV1, provenance("https://other.test/v1"))
			attest(t, d, key.signer, slsaV1, provenance(wantType))
		}, cond, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "att"+string(rune('a'+i)))
			sign(t, digest, key.signer, "")
			tc.setup(digest)
			spec := keyPolicy("release")
			spec.Attestations = []v1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: slsaV1, Authority: "release", Condition: tc.condition}}
			res, err := compile(t, spec, Material{"release": key.pubPEM}).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Authorities[0].Verified || len(res.Attestations) != 1 {
				t.Fatalf("signature must verify and one attestation result exist: %+v", res)
			}
			ar := res.Attestations[0]
			if tc.reason == "" {
				if !res.Verified || !ar.Verified {
					t.Fatalf("want verified, got %+v", res)
				}
				return
			}
			if res.Verified || ar.Verified || ar.Reason != tc.reason {
				t.Fatalf("want %s, got %+v", tc.reason, ar)
			}
		})
	}
}

func TestCompileCondition(t *testing.T) {
	for expr, ok := range map[string]bool{
		`predicate.buildDefinition.buildType == "x"`: true,
		`has(predicate.materials)`:                   true,
		`predicate.buildType ==`:                     false, // syntax
		`1 + 1`:                                      false, // not a bool
		`undeclared.field == 1`:                      false,
	} {
		if _, err := CompileCondition(expr); (err == nil) != ok {
			t.Errorf("CompileCondition(%q): err %v, want ok=%v", expr, err, ok)
		}
	}
	spec := keyPolicy("k")
	spec.Attestations = []v1alpha1.AttestationRequirement{{Name: "p", PredicateType: slsaV1, Authority: "k", Condition: "predicate.x =="}}
	if _, err := Compile(spec, Material{"k": newKey(t, "p256", crypto.SHA256).pubPEM}); err == nil || !strings.Contains(err.Error(), `attestation "p"`) {
		t.Fatalf("want a compile error naming the attestation, got %v", err)
	}
}
