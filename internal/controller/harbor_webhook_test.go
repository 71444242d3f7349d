package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestHarborWebhook: a Harbor project's webhook policy, created through Harbor's API with the
// settings docs/registries.md gives (the receiver URL, the token as auth header, Default and
// CloudEvents payloads), sends Harbor's own deliveries on a push and a delete through Harbor: the
// pushed image has its verdict with no listing (no catalog, tags or artifact listing request),
// both formats' deliveries of one push are one evaluation, and the delete removes its
// ImageAttestation.
func TestHarborWebhook(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	base := startReceiver(t)
	const token = "harbor-webhook-token-0123456789"
	px := newProxy(t, f.dist.URL)
	u, _ := url.Parse(px.URL)
	f.h.Mu.Lock()
	f.h.V2 = httputil.NewSingleHostReverseProxy(u)
	f.h.Mu.Unlock()
	hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: f.ns}, Data: map[string][]byte{"token": []byte(token)}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: f.reg.Name}, Repositories: []string{"team-a/**"}}}
	for _, o := range []client.Object{hook, pol} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	reg := &v1alpha1.Registry{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(f.reg), reg); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(reg.DeepCopy())
	reg.Spec.Interval = &metav1.Duration{Duration: 24 * time.Hour}
	reg.Spec.Notifications = &v1alpha1.NotificationsSpec{SecretRef: v1alpha1.LocalObjectReference{Name: "hook"}}
	if err := k8sClient.Patch(ctx, reg, patch); err != nil {
		t.Fatal(err)
	}
	reg = waitFor(t, reg, "the receiver path in status", func(r *v1alpha1.Registry) bool {
		return r.Status.Notifications != nil && r.Status.Notifications.Path != ""
	})

	// What a Harbor admin enters under Projects > team-a > Webhooks (docs/registries.md).
	policy, _ := json.Marshal(map[string]any{"name": "portcullis", "enabled": true,
		"event_types": []string{"PUSH_ARTIFACT", "DELETE_ARTIFACT", "SCANNING_COMPLETED"},
		"targets": []map[string]any{
			{"type": "http", "address": base + reg.Status.Notifications.Path, "auth_header": "Bearer " + token, "payload_format": "Default"},
			{"type": "http", "address": base + reg.Status.Notifications.Path, "auth_header": "Bearer " + token, "payload_format": "CloudEvents"},
		}})
	req, _ := http.NewRequest(http.MethodPost, f.h.URL+"/api/v2.0/projects/team-a/webhook/policies", bytes.NewReader(policy))
	req.SetBasicAuth(f.h.Username, f.h.Password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating the webhook policy: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	time.Sleep(time.Second) // the Registry's first pass, if any, is done
	before, artifactsBefore := px.snapshot(), f.artifactListings()
	ref, err := name.ParseReference(strings.TrimPrefix(f.h.URL, "http://")+"/team-a/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := registrytest.RandomImage(t)
	start := time.Now()
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	ia := imageFor(t, f.ns, "team-a/app", dg.String(), "a verdict at push time", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	t.Logf("Harbor push to verdict: %s", time.Since(start).Round(time.Millisecond))
	after := px.snapshot()
	if after["GET catalog"] != before["GET catalog"] || after["GET tags"] != before["GET tags"] || after["HEAD manifest"]-before["HEAD manifest"] > 2 {
		t.Errorf("requests for a pushed image: %v -> %v; want one manifest HEAD (two at most) and no listing", before, after)
	}
	if got := f.artifactListings(); got != artifactsBefore {
		t.Errorf("%d artifact listings for a pushed image, want none", got-artifactsBefore)
	}
	f.h.Mu.Lock()
	deliveries := append([]harbortest.Delivery(nil), f.h.Deliveries...)
	f.h.Mu.Unlock()
	if len(deliveries) != 2 || deliveries[0].Status != http.StatusAccepted || deliveries[1].Status != http.StatusAccepted ||
		deliveries[0].Format == deliveries[1].Format {
		t.Errorf("deliveries %+v: want one per target (Default and CloudEvents), each accepted", deliveries)
	}

	// A finished scan is a look-again: accepted in both formats, no listing.
	f.h.Notify("SCANNING_COMPLETED", "team-a", "app", dg.String(), "v1")
	f.h.Mu.Lock()
	scanned := append([]harbortest.Delivery(nil), f.h.Deliveries[2:]...)
	f.h.Mu.Unlock()
	if len(scanned) != 2 || scanned[0].Status != http.StatusAccepted || scanned[1].Status != http.StatusAccepted {
		t.Errorf("scan deliveries %+v: want two, accepted", scanned)
	}

	// A delete through Harbor removes the ImageAttestation.
	digest, err := name.NewDigest(strings.TrimPrefix(f.h.URL, "http://")+"/team-a/app@"+dg.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(digest); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(eventuallyTimeout)
	for !apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ia), &v1alpha1.ImageAttestation{})) {
		if time.Now().After(deadline) {
			t.Fatal("the image deleted in Harbor is still in the inventory")
		}
		time.Sleep(pollInterval)
	}
	f.h.Mu.Lock()
	last := f.h.Deliveries[len(f.h.Deliveries)-1]
	f.h.Mu.Unlock()
	if last.EventType != "DELETE_ARTIFACT" || last.Status != http.StatusAccepted {
		t.Errorf("the last delivery %+v, want an accepted DELETE_ARTIFACT", last)
	}
}

// artifactListings counts Harbor's artifact listing requests (a listing of a repository).
func (f *harborFixture) artifactListings() int {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	n := 0
	for k, v := range f.h.Requests {
		if strings.HasPrefix(k, "GET ") && strings.HasSuffix(k, "/artifacts") {
			n += v
		}
	}
	return n
}
