package verify

import (
	"context"
	"crypto"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// countingRegistry counts the requests that reach a test registry, by method and path.
type countingRegistry struct {
	*testRegistry
	mu     sync.Mutex
	counts map[string]int
}

func newCountingRegistry(t *testing.T) *countingRegistry {
	c := &countingRegistry{testRegistry: newRegistry(t), counts: map[string]int{}}
	inner := c.Config.Handler
	c.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.counts[r.Method+" "+r.URL.Path]++
		c.mu.Unlock()
		inner.ServeHTTP(w, r)
	})
	return c
}

func (c *countingRegistry) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

func sigTag(d name.Digest) string { return strings.Replace(d.DigestStr(), ":", "-", 1) + ".sig" }

// TestKnownSkipsAbsentTags: what a listing says is absent is not requested. An unsigned image on a
// registry without the referrers API costs no request at all; a signed one reads its .sig tag.
func TestKnownSkipsAbsentTags(t *testing.T) {
	reg := newCountingRegistry(t)
	key := newKey(t, "p256", crypto.SHA256)
	v := compile(t, keyPolicy("k"), Material{"k": key.pubPEM})
	ctx := context.Background()
	unsigned := reg.pushImage(t, "unsigned")
	signed := reg.pushImage(t, "signed")
	sign(t, signed, key.signer, "")
	reg.take()

	res, err := v.With(&Known{Tags: map[string]bool{}, NoReferrersAPI: true}).Verify(ctx, unsigned)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureMissing {
		t.Fatalf("unsigned: %+v, %v", res, err)
	}
	if got := reg.take(); len(got) != 0 {
		t.Fatalf("unsigned, nothing listed, no referrers API: requests %v, want none", got)
	}

	// The registry has the referrers API (or it is not known not to): only referrers are asked.
	if _, err := v.With(&Known{Tags: map[string]bool{}}).Verify(ctx, unsigned); err != nil {
		t.Fatal(err)
	}
	for k := range reg.take() {
		if strings.Contains(k, "/manifests/") && strings.HasSuffix(k, ".sig") {
			t.Fatalf("the absent .sig tag was requested: %s", k)
		}
	}

	res, err = v.With(&Known{Tags: map[string]bool{sigTag(signed): true}, NoReferrersAPI: true}).Verify(ctx, signed)
	if err != nil || !res.Verified {
		t.Fatalf("signed, .sig listed: %+v, %v", res, err)
	}
	if got := reg.take(); got["GET /v2/signed/manifests/"+sigTag(signed)] != 1 {
		t.Fatalf("requests %v: want one GET of the .sig tag", got)
	}

	// Without Known (nil), everything is requested as before.
	res, err = v.With(nil).Verify(ctx, signed)
	if err != nil || !res.Verified {
		t.Fatalf("signed, nothing known: %+v, %v", res, err)
	}
}

// TestKnownIgnoredForSignatureRepository: a listing of the image's repository says nothing of
// another repository, so signatures stored there are still read.
func TestKnownIgnoredForSignatureRepository(t *testing.T) {
	reg := newCountingRegistry(t)
	key := newKey(t, "p256", crypto.SHA256)
	spec := keyPolicy("k")
	spec.SignatureRepository = "signatures/app"
	v := compile(t, spec, Material{"k": key.pubPEM})
	d := reg.pushImage(t, "app")
	sign(t, d, key.signer, "signatures/app")
	res, err := v.With(&Known{Tags: map[string]bool{}, NoReferrersAPI: true}).Verify(context.Background(), d)
	if err != nil || !res.Verified {
		t.Fatalf("%+v, %v", res, err)
	}
}
