package trivyscan

import (
	"crypto/rand"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// push writes img as repo:v1 and returns its digest reference, host/repo@sha256:....
func (r *countingRegistry) push(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return r.host + "/" + repo + "@" + d.String()
}

// openTrivy opens a scanner on dbDir with a fresh layer cache, closed when the test ends.
func openTrivy(t testing.TB, dbDir string, maxImageSize int64) *Trivy {
	t.Helper()
	tr, err := NewTrivy(dbDir, t.TempDir(), maxImageSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// randomBytes is n random bytes: content that does not compress.
func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
