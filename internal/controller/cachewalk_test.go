package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestImageWalker: walking the informer's indexer visits exactly the ImageAttestations a List with
// the registry field index returns (so the index name and key controller-runtime builds are the
// ones imageWalker reads), per Registry and across the cluster, and the fallback to List agrees.
func TestImageWalker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns, other := newNamespace(t), newNamespace(t)
	for i, at := range []struct{ ns, reg string }{{ns, "a"}, {ns, "a"}, {ns, "b"}, {other, "a"}} {
		ia := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ia-%d", i), Namespace: at.ns},
			Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: at.reg}, Repository: "shop/api",
				Digest: fmt.Sprintf("sha256:%064x", i), Tags: []string{"v1"}}}
		if err := k8sClient.Create(ctx, ia); err != nil {
			t.Fatal(err)
		}
	}
	c, err := crcache.New(suiteCfg, crcache.Options{Scheme: testScheme, DefaultNamespaces: map[string]crcache.Config{ns: {}, other: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registerIndexes(ctx, c); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	names := func(w imageWalker, ns, reg string) []string {
		var out []string
		if err := w.each(ctx, ns, reg, func(ia *v1alpha1.ImageAttestation) { out = append(out, ia.Namespace+"/"+ia.Name) }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	walker, lister := imageWalker{informers: c, reader: c}, imageWalker{reader: c}
	for _, q := range []struct {
		ns, reg string
		want    []string
	}{
		{ns, "a", []string{ns + "/ia-0", ns + "/ia-1"}},
		{ns, "b", []string{ns + "/ia-2"}},
		{other, "a", []string{other + "/ia-3"}},
		{ns, "none", nil},
		{"", "", []string{ns + "/ia-0", ns + "/ia-1", ns + "/ia-2", other + "/ia-3"}},
	} {
		slices.Sort(q.want) // the namespaces' names are random
		if got := names(walker, q.ns, q.reg); !slices.Equal(got, q.want) {
			t.Errorf("walk %s/%s: got %v, want %v", q.ns, q.reg, got, q.want)
		}
		if got := names(lister, q.ns, q.reg); !slices.Equal(got, q.want) {
			t.Errorf("list %s/%s: got %v, want %v", q.ns, q.reg, got, q.want)
		}
	}
}
