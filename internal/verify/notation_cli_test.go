package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestNotationCLI is the real-client check for Notary Project signatures: the notation CLI makes a
// test key and certificate (`notation cert generate-test`), signs images on CNCF Distribution in JWS
// and COSE (kept under the referrers fallback tag), and Portcullis verifies what it wrote with a
// notation authority trusting that certificate. It runs only when PORTCULLIS_NOTATION_BIN names a
// notation binary (`make bench` builds one; CI never does).
func TestNotationCLI(t *testing.T) {
	bin := os.Getenv("PORTCULLIS_NOTATION_BIN")
	if bin == "" {
		t.Skip("PORTCULLIS_NOTATION_BIN is not set (a notation CLI; never built in CI)")
	}
	d := registrytest.StartDistribution(t, registrytest.Options{})
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("notation %v: %v\n%s", args, err, out)
		}
	}
	run("cert", "generate-test", "--default", "release")
	cert, err := os.ReadFile(filepath.Join(dir, "config", "notation", "localkeys", "release.crt"))
	if err != nil {
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
	jwsSigned, coseSigned, unsigned := push("jws"), push("cose"), push("unsigned")
	run("sign", "--insecure-registry", jwsSigned.String())
	run("sign", "--insecure-registry", "--signature-format", "cose", coseSigned.String())

	material := Material{"release": cert}
	for _, identities := range [][]string{{"*"}, {"x509.subject:C=US, ST=WA, L=Seattle, O=Notary, CN=release"}} {
		v := compile(t, notationPolicy(identities...), material)
		for _, ref := range []name.Digest{jwsSigned, coseSigned} {
			res, err := v.Verify(context.Background(), ref)
			if err != nil || !res.Verified {
				t.Errorf("%s with trustedIdentities %v: want verified, got %+v, %v", ref.Context().RepositoryStr(), identities, res, err)
			}
		}
	}
	res, err := compile(t, notationPolicy("*"), material).Verify(context.Background(), unsigned)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureMissing {
		t.Errorf("unsigned: want %s, got %+v, %v", ReasonSignatureMissing, res, err)
	}
	res, err = compile(t, notationPolicy("x509.subject:C=US, ST=WA, O=Other, CN=release"), material).Verify(context.Background(), jwsSigned)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonIdentityMismatch {
		t.Errorf("another identity: want %s, got %+v, %v", ReasonIdentityMismatch, res, err)
	}
}
