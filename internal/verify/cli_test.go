package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestCosignV3CLI is the real-client check: the cosign v3 CLI signs and attests images on CNCF
// Distribution at its defaults (sigstore bundles as referrers, kept under the fallback tag) with a key
// and a signing config without a transparency log, and Portcullis verifies what it wrote. It runs only
// when PORTCULLIS_COSIGN3_BIN names a cosign v3 binary (`make bench` builds one; CI never does).
func TestCosignV3CLI(t *testing.T) {
	bin := os.Getenv("PORTCULLIS_COSIGN3_BIN")
	if bin == "" {
		t.Skip("PORTCULLIS_COSIGN3_BIN is not set (a cosign v3 CLI; never built in CI)")
	}
	d := registrytest.StartDistribution(t, registrytest.Options{})
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "TUF_ROOT="+filepath.Join(dir, "tuf"), "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %v: %v\n%s", args, err, out)
		}
	}
	run("generate-key-pair")
	pub, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "signing-config.json")
	if err := os.WriteFile(config, []byte(signingConfigNoLog), 0o600); err != nil {
		t.Fatal(err)
	}
	push := func(repo string) name.Digest {
		img, _ := random.Image(256, 1)
		dg := d.Push(t, repo, "v1", img)
		ref, err := name.NewDigest(d.Host+"/"+repo+"@"+dg, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	signed, unsigned := push("signed"), push("unsigned")
	run("sign", "--key", "cosign.key", "--signing-config", config, "--allow-http-registry", "-y", signed.String())
	predicate := filepath.Join(dir, "provenance.json")
	if err := os.WriteFile(predicate, []byte(`{"buildDefinition":{"buildType":"https://example.test/build/v1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	run("attest", "--key", "cosign.key", "--signing-config", config, "--allow-http-registry", "-y",
		"--type", slsaV1, "--predicate", predicate, signed.String())
	// cosign itself accepts what it wrote.
	run("verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-http-registry", signed.String())

	// What cosign v3 wrote: no legacy .sig/.att tags, the referrers fallback tag instead.
	tags, err := remote.List(signed.Context(), remote.WithAuth(d.Auth()))
	if err != nil {
		t.Fatal(err)
	}
	fallback := strings.Replace(signed.DigestStr(), ":", "-", 1)
	if !slices.Contains(tags, fallback) || slices.Contains(tags, fallback+".sig") || slices.Contains(tags, fallback+".att") {
		t.Fatalf("want only the fallback tag %s besides v1, got %v", fallback, tags)
	}

	spec := keyPolicy("release")
	spec.Attestations = []v1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: slsaV1, Authority: "release",
		Condition: `predicate.buildDefinition.buildType == "https://example.test/build/v1"`}}
	v := compile(t, spec, Material{"release": pub}).With(nil, remote.WithAuth(d.Auth()))
	res, err := v.Verify(context.Background(), signed)
	if err != nil || !res.Verified || res.Authorities[0].Signer != "key release" {
		t.Fatalf("cosign v3 signature and attestation: %+v, %v", res, err)
	}
	res, err = v.Verify(context.Background(), unsigned)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureMissing {
		t.Fatalf("unsigned image: %+v, %v", res, err)
	}
}

// signingConfigNoLog is a sigstore signing config (v0.2) naming no Fulcio, Rekor or TSA: with
// `--key`, cosign v3 then signs without a transparency-log entry.
const signingConfigNoLog = `{"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json"}`
