package verify

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/rekor/pkg/generated/client/entries"
	"github.com/sigstore/rekor/pkg/generated/models"
	"github.com/sigstore/rekor/pkg/types"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// signKeyWithLog signs subject as `cosign sign --key` (v2, legacy format) with a transparency log
// does: the `.sig` signature carries the Rekor bundle annotation that logEntry makes for it (nil: no
// entry, as --tlog-upload=false).
func signKeyWithLog(t *testing.T, subject name.Digest, k keyPair, logEntry func(payload, raw []byte) *bundle.RekorBundle) {
	t.Helper()
	var extra []func(payload, raw []byte) static.Option
	if logEntry != nil {
		extra = append(extra, func(p, raw []byte) static.Option { return static.WithBundle(logEntry(p, raw)) })
	}
	signWith(t, subject, k.signer, nil, extra...)
}

func keyWithRootPolicy(ignoreTlog bool) *v1alpha1.VerificationSpec {
	return &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release", IgnoreTransparencyLog: ignoreTlog,
		Key: &v1alpha1.KeyAuthority{Data: "x", TrustedRootRef: &v1alpha1.TrustedRootReference{Name: "rekor"}}}}}
}

// TestKeyAuthorityTransparencyLog (legacy `.sig` format): with a trusted root on the key authority,
// a signature whose Rekor entry was signed by the root's log verifies with the log required; no
// entry, an entry of another log, or an entry that records another signature never counts.
func TestKeyAuthorityTransparencyLog(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	rekor, otherRekor := newRekor(t), newRekor(t)
	k, other := newKey(t, "p256", crypto.SHA256), newKey(t, "p256", crypto.SHA256)
	material := Material{"release": k.pubPEM, KeyTrustedRoot("release"): verifytest.TrustedRootJSON(t, nil, nil, verifytest.TransparencyLog(t, &rekor.key.PublicKey))}
	v := compile(t, keyWithRootPolicy(false), material)
	now := time.Now()
	cases := []struct {
		name  string
		entry func(p, raw []byte) *bundle.RekorBundle
		want  string
	}{
		{"entry signed by the trusted log", func(p, raw []byte) *bundle.RekorBundle { return rekor.bundleFor(t, p, raw, k.pubPEM, now) }, ""},
		{"no entry", nil, ReasonTransparencyLogUnverifiable},
		{"entry signed by another log", func(p, raw []byte) *bundle.RekorBundle { return otherRekor.bundleFor(t, p, raw, k.pubPEM, now) }, ReasonTransparencyLogUnverifiable},
		{"entry of another signature", func(p, _ []byte) *bundle.RekorBundle {
			otherRaw, err := k.signer.SignMessage(strings.NewReader(string(p) + " "))
			if err != nil {
				t.Fatal(err)
			}
			return rekor.bundleFor(t, p, otherRaw, k.pubPEM, now)
		}, ReasonTransparencyLogUnverifiable},
		{"entry naming another key", func(p, raw []byte) *bundle.RekorBundle { return rekor.bundleFor(t, p, raw, other.pubPEM, now) }, ReasonTransparencyLogUnverifiable},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "kl"+string(rune('a'+i)))
			signKeyWithLog(t, digest, k, tc.entry)
			res, err := v.Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			got := res.Authorities[0]
			if tc.want == "" {
				if !res.Verified {
					t.Fatalf("want verified, got %+v", got)
				}
				return
			}
			if res.Verified || got.Reason != tc.want {
				t.Fatalf("want %s, got %+v", tc.want, got)
			}
		})
	}

	// A signature by another key, logged by the trusted log: the key is what is wrong (cosign checks
	// the log first; the reason must not blame the log).
	byOther := reg.pushImage(t, "kl-other")
	signKeyWithLog(t, byOther, other, func(p, raw []byte) *bundle.RekorBundle { return rekor.bundleFor(t, p, raw, other.pubPEM, now) })
	if res, err := v.Verify(ctx, byOther); err != nil || res.Verified || res.Authorities[0].Reason != ReasonKeyMismatch {
		t.Fatalf("another key's logged signature: %+v, %v; want KeyMismatch", res, err)
	}

	// The same signature with the trusted root but ignoreTransparencyLog, and without the root: as
	// before (accepted; TransparencyLogUnverifiable with the advice to set trustedRootRef).
	digest := reg.pushImage(t, "kl-noroot")
	signKeyWithLog(t, digest, k, func(p, raw []byte) *bundle.RekorBundle { return rekor.bundleFor(t, p, raw, k.pubPEM, now) })
	if res, err := compile(t, keyWithRootPolicy(true), material).Verify(ctx, digest); err != nil || !res.Verified {
		t.Fatalf("ignoreTransparencyLog with a root: %+v, %v", res, err)
	}
	noRoot := &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release", Key: &v1alpha1.KeyAuthority{Data: "x"}}}}
	res, err := compile(t, noRoot, Material{"release": k.pubPEM}).Verify(ctx, digest)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonTransparencyLogUnverifiable {
		t.Fatalf("no trusted root: %+v, %v", res, err)
	}

	// A trusted root that lists no log is refused at compile time (the policy is Stalled).
	if _, err := Compile(keyWithRootPolicy(false), Material{"release": k.pubPEM, KeyTrustedRoot("release"): verifytest.TrustedRootJSON(t, nil, nil, nil)}); err == nil ||
		!strings.Contains(err.Error(), "no transparency log") {
		t.Fatalf("a root without logs: %v", err)
	}
}

// fakeRekor is a Rekor v1 log for sigstore-go's signer (sign.Rekor with an injected client): it
// canonicalises the proposed entry as Rekor does and answers with a log entry whose signed entry
// timestamp and inclusion proof (a one-leaf tree, signed checkpoint) come from sigstore-go's own
// test log (testing/ca.VirtualSigstore).
type fakeRekor struct {
	log *ca.VirtualSigstore
}

func (f fakeRekor) CreateLogEntry(params *entries.CreateLogEntryParams, _ ...entries.ClientOption) (*entries.CreateLogEntryCreated, error) {
	ctx := context.Background()
	impl, err := types.UnmarshalEntry(params.ProposedEntry)
	if err != nil {
		return nil, err
	}
	body, err := types.CanonicalizeEntry(ctx, impl)
	if err != nil {
		return nil, err
	}
	logID, err := f.log.RekorLogID()
	if err != nil {
		return nil, err
	}
	proof, err := f.log.GetInclusionProof(body)
	if err != nil {
		return nil, err
	}
	integrated := time.Now().Unix()
	set, err := f.log.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: integrated,
		LogIndex: *proof.LogIndex, LogID: logID})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	uuid := hex.EncodeToString(sum[:])
	entry := models.LogEntryAnon{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: &integrated, LogIndex: proof.LogIndex,
		LogID: &logID, Verification: &models.LogEntryAnonVerification{InclusionProof: proof, SignedEntryTimestamp: strfmt.Base64(set)}}
	return &entries.CreateLogEntryCreated{ETag: uuid, Payload: models.LogEntry{uuid: entry}}, nil
}

// virtualLogs is the test log's entry for a trusted_root.json: VirtualSigstore keeps the log ID as
// its hex text in memory; the JSON form needs the ID bytes.
func virtualLogs(t *testing.T, vs *ca.VirtualSigstore) map[string]*root.TransparencyLog {
	t.Helper()
	logs := vs.RekorLogs()
	for k, l := range logs {
		id, err := hex.DecodeString(k)
		if err != nil {
			t.Fatal(err)
		}
		l.ID = id
	}
	return logs
}

// TestKeyAuthorityTransparencyLogBundles: cosign v3 `sign --key` with Rekor writes a sigstore
// bundle whose log entry carries an inclusion proof and promise; with the key authority's trusted
// root it verifies with the log required (signatures and attestations), and a bundle recorded by a
// log the root does not list, or by none, does not.
func TestKeyAuthorityTransparencyLogBundles(t *testing.T) {
	ctx := context.Background()
	reg := referrersRegistry(t)
	trusted, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	signer := verifytest.NewBundleSigner(t)
	spec := keyWithRootPolicy(false)
	spec.Attestations = []v1alpha1.AttestationRequirement{{Name: "provenance", Authority: "release", PredicateType: "https://slsa.dev/provenance/v1"}}
	v := compile(t, spec, Material{"release": signer.PublicPEM, KeyTrustedRoot("release"): verifytest.TrustedRootJSON(t, nil, nil, virtualLogs(t, trusted))})

	// A bundle by another key, recorded by the trusted log: KeyMismatch, not a log problem.
	other := verifytest.NewBundleSigner(t)
	other.Logs = []sgsign.Transparency{sgsign.NewRekor(&sgsign.RekorOptions{Client: fakeRekor{trusted}})}
	byOther, _ := reg.push(t, "kb/other")
	other.SignBundle(t, byOther)
	if res, err := v.Verify(ctx, byOther); err != nil || res.Verified || res.Authorities[0].Reason != ReasonKeyMismatch {
		t.Fatalf("another key's logged bundle: %+v, %v; want KeyMismatch", res.Authorities, err)
	}

	for _, tc := range []struct {
		name string
		logs []sgsign.Transparency
		want bool
	}{
		{"recorded by the trusted log", []sgsign.Transparency{sgsign.NewRekor(&sgsign.RekorOptions{Client: fakeRekor{trusted}})}, true},
		{"recorded by another log", []sgsign.Transparency{sgsign.NewRekor(&sgsign.RekorOptions{Client: fakeRekor{untrusted}})}, false},
		{"not recorded", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			digest, _ := reg.push(t, "kb/"+strings.ReplaceAll(tc.name, " ", "-"))
			s := signer
			s.Logs = tc.logs
			s.SignBundle(t, digest)
			s.Attest(t, digest, "https://slsa.dev/provenance/v1", map[string]any{"buildType": "x"})
			res, err := v.Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want {
				if !res.Verified || !res.Attestations[0].Verified {
					t.Fatalf("want signature and attestation verified: %+v %+v", res.Authorities, res.Attestations)
				}
				return
			}
			if res.Verified || res.Authorities[0].Reason != ReasonTransparencyLogUnverifiable {
				t.Fatalf("signature: want TransparencyLogUnverifiable, got %+v", res.Authorities[0])
			}
			if res.Attestations[0].Verified {
				t.Fatalf("attestation must not count: %+v", res.Attestations[0])
			}
		})
	}
}
