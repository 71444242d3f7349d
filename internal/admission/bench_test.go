package admission

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/kubetest"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/verify"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// BenchmarkAdmission10k measures the webhook's decision for a Deployment whose image is one of
// 10,000 ImageAttestations in the manager's cache (the real informer cache of a real API server),
// side by side with verify-on-admission, the obvious alternative policy-controller implements:
// per request, resolve the tag with a HEAD and verify the cosign signature with the cosign library
// against the registry (go-containerregistry's in-process registry: no network latency, so the
// baseline is at its fastest). Reports p50 and p99 of each and the p99 ratio.
//
//	make bench   (never part of CI)
func BenchmarkAdmission10k(b *testing.B) {
	const n = 10_000
	cfg, _, scheme := kubetest.Start(b)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := startRegistry(b)
	host := reg.host()
	must(b, c.Create(ctx, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "reg"},
		Spec: v1alpha1.RegistrySpec{URL: reg.URL, Insecure: true}}))
	p := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "prod"},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: []string{"**"}, Mode: v1alpha1.ModeEnforce}}
	must(b, c.Create(ctx, p))
	// 10,000 ImageAttestations (100 repositories x 100 tags), compliant, written 16 at a time.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				repo, tag, digest := fmt.Sprintf("bench/repo-%02d", i%100), fmt.Sprintf("v%d", i/100), fmt.Sprintf("sha256:%064x", i)
				ia := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: v1alpha1.ImageAttestationName("reg", repo, digest)},
					Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repository: repo, Digest: digest, Tags: []string{tag}}}
				if err := c.Create(ctx, ia); err != nil {
					errs <- err
					return
				}
				ia.Status.Policies = []v1alpha1.PolicyResult{{Name: "prod", ObservedGeneration: 1, Compliant: true}}
				if err := c.Status().Update(ctx, ia); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	informers, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		b.Fatal(err)
	}
	must(b, IndexFields(ctx, informers))
	for _, o := range []client.Object{&v1alpha1.Registry{}, &v1alpha1.RepositoryPolicy{}, &v1alpha1.ImageAttestation{}} {
		if _, err := informers.GetInformer(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	go func() { _ = informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		b.Fatal("cache did not sync")
	}
	h := &Handler{Inventory: &Inventory{Reader: informers}, Decoder: admission.NewDecoder(scheme)}
	request := func(image string) admission.Request {
		raw, err := json.Marshal(deployment("apps", "web", image))
		if err != nil {
			b.Fatal(err)
		}
		return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "apps",
			Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Object: runtime.RawExtension{Raw: raw}}}
	}

	// Verify-on-admission: 100 signed images in the registry, a verifier compiled once (as
	// policy-controller keeps its compiled policies), per request one tag HEAD and one signature
	// verification with the cosign library.
	key := verifytest.NewKey(b, "p256", crypto.SHA256)
	rc, err := registry.New(registry.Config{URL: reg.URL, Insecure: true, MetricsName: "bench/admission", RequestsPerSecond: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	signed := make([]string, 100)
	for i := range signed {
		repo := fmt.Sprintf("signed/app-%02d", i)
		d := reg.push(b, repo, "v1")
		dg, err := name.NewDigest(host+"/"+repo+"@"+d, name.Insecure)
		if err != nil {
			b.Fatal(err)
		}
		verifytest.Sign(b, dg, key.Signer, "")
		signed[i] = repo
	}
	spec := &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "k", Key: &v1alpha1.KeyAuthority{Data: "x"}, IgnoreTransparencyLog: true}}}
	v, err := verify.Compile(spec, verify.Material{"k": key.PublicPEM})
	if err != nil {
		b.Fatal(err)
	}
	baseline := func(repo string) error {
		m, err := rc.Resolve(ctx, repo, "v1")
		if err != nil {
			return err
		}
		dg, err := name.NewDigest(host+"/"+repo+"@"+m.Digest, name.Insecure)
		if err != nil {
			return err
		}
		res, err := v.With(nil, rc.RemoteOptions()...).Verify(ctx, dg)
		if err == nil && !res.Verified {
			err = fmt.Errorf("%s: not verified", repo)
		}
		return err
	}

	var lookup, verifying []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range 2000 {
			req := request(fmt.Sprintf("%s/bench/repo-%02d:v%d", host, (i*37)%100, (i*53)%100))
			start := time.Now()
			resp := h.Handle(ctx, req)
			lookup = append(lookup, time.Since(start))
			if !resp.Allowed {
				b.Fatalf("refused: %v", resp.Result)
			}
		}
		for i := range 200 {
			start := time.Now()
			if err := baseline(signed[i%len(signed)]); err != nil {
				b.Fatal(err)
			}
			verifying = append(verifying, time.Since(start))
		}
	}
	b.StopTimer()
	lp50, lp99 := percentiles(lookup)
	vp50, vp99 := percentiles(verifying)
	b.ReportMetric(float64(lp50.Microseconds()), "lookup-p50-µs")
	b.ReportMetric(float64(lp99.Microseconds()), "lookup-p99-µs")
	b.ReportMetric(float64(vp50.Microseconds()), "verify-p50-µs")
	b.ReportMetric(float64(vp99.Microseconds()), "verify-p99-µs")
	b.ReportMetric(float64(vp99)/float64(lp99), "verify/lookup-p99")
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[len(s)*99/100]
}

func must(b testing.TB, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
