package controller

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// startReceiver runs the push receiver of the suite's manager on a free port and returns its base
// URL.
func startReceiver(t testing.TB) string {
	t.Helper()
	addr := freeAddr(t)
	srv := &receiver.Server{Addr: addr, Handler: &receiver.Handler{Target: testWiring.Receiver},
		Get: func(ctx context.Context, key types.NamespacedName) (*v1alpha1.Registry, error) {
			reg := &v1alpha1.Registry{}
			return reg, k8sClient.Get(ctx, key, reg)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Start(ctx) }()
	go func() { _ = testWiring.ReceiverStatus.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver did not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPushReceiver: a real CNCF Distribution configured with `notifications.endpoints` pointing at
// the manager's receiver, for a Registry listed once a day: a push has its verdict with no listing
// (the counting proxy sees no catalog or tags request, one manifest HEAD), a delete removes the
// ImageAttestation, and forged, unsigned, oversize, malformed and replayed deliveries change
// nothing; the Registry's status counts accepted and refused deliveries.
func TestPushReceiver(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	base := startReceiver(t)
	const token = "receiver-token-0123456789"
	distAddr := freeAddr(t)
	p := newProxy(t, "http://"+distAddr)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: p.URL, Insecure: true,
		Interval: &metav1.Duration{Duration: 24 * time.Hour}, Notifications: &v1alpha1.NotificationsSpec{SecretRef: v1alpha1.LocalObjectReference{Name: "hook"}}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"}}}
	hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns}, Data: map[string][]byte{"token": []byte(token)}}
	for _, o := range []client.Object{hook, pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	url := base + receiver.Path(reg.UID)
	dist := registrytest.StartDistribution(t, registrytest.Options{Addr: distAddr, Notify: &registrytest.NotifyEndpoint{URL: url, Token: token}})
	seed := dist.Push(t, "shop/seed", "v1", registrytest.RandomImage(t))
	requestPass(t, reg)
	imageFor(t, ns, "shop/seed", seed, "the one listing's image", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	waitFor(t, reg, "the receiver path in status", func(r *v1alpha1.Registry) bool {
		return r.Status.Notifications != nil && r.Status.Notifications.Path == receiver.Path(r.UID)
	})

	before := p.snapshot()
	start := time.Now()
	pushed := dist.Push(t, "shop/api", "v1", registrytest.RandomImage(t))
	ia := imageFor(t, ns, "shop/api", pushed, "a verdict at push time", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	t.Logf("push to verdict: %s", time.Since(start).Round(time.Millisecond))
	after := p.snapshot()
	// One HEAD resolves the tag; a registry may deliver the event again (a retry after its own
	// timeout) while the first is being worked off, which costs one more at most.
	if heads := after["HEAD manifest"] - before["HEAD manifest"]; after["GET catalog"] != before["GET catalog"] || after["GET tags"] != before["GET tags"] ||
		heads < 1 || heads > 2 {
		t.Errorf("requests for a pushed image: %v -> %v; want one manifest HEAD (two at most) and no listing", before, after)
	}
	// The same delivery again, once the image is in the inventory: no request at all.
	again := p.snapshot()
	redeliver := []byte(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"shop/api","tag":"v1","digest":"` + pushed + `"}}]}`)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(redeliver))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v1+json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a redelivery: %v %v", resp, err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := p.snapshot(); got["HEAD manifest"] != again["HEAD manifest"] || got["GET manifest"] != again["GET manifest"] {
		t.Errorf("a redelivered event cost requests: %v -> %v", again, got)
	}

	// An index (its platform manifests are pushed by digest) and a cosign signature tag: one
	// ImageAttestation, for the index, as a listing would have it.
	multi := dist.PushIndex(t, "shop/multi", "v1", registrytest.PlatformIndex(t, "linux/amd64", "linux/arm64"))
	dist.Push(t, "shop/multi", strings.Replace(multi, "sha256:", "sha256-", 1)+".sig", registrytest.RandomImage(t))
	imageFor(t, ns, "shop/multi", multi, "the pushed index judged", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	time.Sleep(time.Second) // the signature's and the platforms' events are worked off
	all := &v1alpha1.ImageAttestationList{}
	if err := k8sClient.List(ctx, all, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var repos []string
	for _, ia := range all.Items {
		repos = append(repos, ia.Spec.Repository+":"+strings.Join(ia.Spec.Tags, ","))
	}
	if len(all.Items) != 3 {
		t.Errorf("ImageAttestations %v: want shop/seed, shop/api and the index shop/multi only (no signature, no platform manifest)", repos)
	}

	// A tag pushed again onto another image moved: the repository is listed at once, so the move is
	// recorded on the new digest and the old one, left untagged, leaves the inventory.
	first := dist.Push(t, "shop/mover", "v1", registrytest.RandomImage(t))
	imageFor(t, ns, "shop/mover", first, "the first image of the tag", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	beforeMove := p.snapshot()
	second := dist.Push(t, "shop/mover", "v1", registrytest.RandomImage(t))
	moved := imageFor(t, ns, "shop/mover", second, "the tag's new image, with the move recorded", func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Spec.MovedTags) == 1 && ia.Spec.MovedTags[0].Tag == "v1" && ia.Spec.MovedTags[0].From == first
	})
	if d := p.snapshot()["GET catalog"] - beforeMove["GET catalog"]; d != 0 || len(moved.Spec.Tags) != 1 {
		t.Errorf("a tag move: %d catalog requests, tags %v", d, moved.Spec.Tags)
	}
	deadline := time.Now().Add(eventuallyTimeout)
	for !apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imageAttestationName("dist", "shop/mover", first)}, &v1alpha1.ImageAttestation{})) {
		if time.Now().After(deadline) {
			t.Fatal("the image the tag moved away from is still in the inventory")
		}
		time.Sleep(pollInterval)
	}

	post := func(path, auth string, hdr map[string]string, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	envelope := func(action, repo, tag, digest string) []byte {
		return []byte(`{"events":[{"action":"` + action + `","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"` + repo +
			`","tag":"` + tag + `","digest":"` + digest + `"}}]}`)
	}
	distType := map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
	path := receiver.Path(reg.UID)
	other := dist.Push(t, "shop/other", "v1", registrytest.RandomImage(t))
	imageFor(t, ns, "shop/other", other, "another push judged", func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 })
	for _, c := range []struct {
		name string
		code int
		send func() int
	}{
		{"a wrong token", http.StatusUnauthorized, func() int { return post(path, "not-the-token", distType, envelope("delete", "shop/api", "", pushed)) }},
		{"no token", http.StatusUnauthorized, func() int { return post(path, "", distType, envelope("delete", "shop/api", "", pushed)) }},
		{"an unknown path", http.StatusNotFound, func() int {
			return post(receiver.PathPrefix+strings.Repeat("0", 32), token, distType, envelope("push", "a", "v1", ""))
		}},
		{"an oversize body", http.StatusRequestEntityTooLarge, func() int { return post(path, token, distType, bytes.Repeat([]byte(" "), receiver.MaxBody+1)) }},
		{"malformed JSON", http.StatusBadRequest, func() int { return post(path, token, distType, []byte(`{"events":[`)) }},
		{"an unsigned generic payload", http.StatusUnauthorized, func() int { return post(path, token, nil, []byte(`{"repository":"shop/api","tag":"v1"}`)) }},
		{"a lying delete (the digest is still there)", http.StatusAccepted, func() int { return post(path, token, distType, envelope("delete", "shop/other", "", other)) }},
	} {
		if got := c.send(); got != c.code {
			t.Errorf("%s: HTTP %d, want %d", c.name, got, c.code)
		}
	}
	time.Sleep(time.Second) // the accepted lie is worked off: the registry says the digest exists
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imageAttestationName("dist", "shop/other", other)}, &v1alpha1.ImageAttestation{}); err != nil {
		t.Fatalf("a delete the registry contradicts removed the ImageAttestation: %v", err)
	}

	// Harbor's deliveries, as its Default and CloudEvents formatters write them (the Auth Header
	// carries the token), posted to the endpoint: a push the inventory already agrees with costs
	// nothing, and a delete of a digest the registry still has removes nothing.
	harborData := `{"resources":[{"digest":"` + other + `","tag":"v1","resource_url":"` + strings.TrimPrefix(dist.URL, "http://") + `/shop/other:v1"}],` +
		`"repository":{"date_created":1677053165,"name":"other","namespace":"shop","repo_full_name":"shop/other","repo_type":"private"}}`
	quiet := p.snapshot()
	if got := post(path, token, map[string]string{"Content-Type": "application/json"},
		[]byte(`{"type":"PUSH_ARTIFACT","occur_at":1678082303,"operator":"admin","event_data":`+harborData+`}`)); got != http.StatusAccepted {
		t.Errorf("a Harbor Default push: HTTP %d", got)
	}
	if got := post(path, token, map[string]string{"Content-Type": "application/cloudevents+json"},
		[]byte(`{"specversion":"1.0","id":"4b2f","source":"/projects/1/webhook/policies/3","type":"harbor.artifact.deleted",`+
			`"datacontenttype":"application/json","time":"2023-03-06T06:08:43Z","data":`+harborData+`,"operator":"admin"}`)); got != http.StatusAccepted {
		t.Errorf("a Harbor CloudEvents delete: HTTP %d", got)
	}
	time.Sleep(time.Second)
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imageAttestationName("dist", "shop/other", other)}, &v1alpha1.ImageAttestation{}); err != nil {
		t.Fatalf("a Harbor delete the registry contradicts removed the ImageAttestation: %v", err)
	}
	// The push costs nothing; the delete costs a HEAD of the digest and, since it names a tag, one
	// listing of that repository (a tags request and a HEAD of its one tag); no catalog.
	if got := p.snapshot(); got["GET catalog"] != quiet["GET catalog"] || got["HEAD manifest"]-quiet["HEAD manifest"] > 2 ||
		got["GET tags"]-quiet["GET tags"] > 1 {
		t.Errorf("Harbor deliveries: requests %v -> %v; want two HEADs and one tags request at most", quiet, got)
	}

	// A signed generic payload is accepted.
	body := []byte(`{"repository":"shop/api","tag":"v1"}`)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write(body)
	if got := post(path, "", map[string]string{receiver.SignatureHeader: "sha256=" + hex.EncodeToString(mac.Sum(nil))}, body); got != http.StatusAccepted {
		t.Errorf("a signed generic payload: HTTP %d", got)
	}

	// A real delete removes the ImageAttestation; replaying the push does not bring it back.
	dist.Delete(t, "shop/api", pushed)
	deadline = time.Now().Add(eventuallyTimeout)
	for !apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ia), &v1alpha1.ImageAttestation{})) {
		if time.Now().After(deadline) {
			t.Fatal("the deleted image's ImageAttestation is still there")
		}
		time.Sleep(pollInterval)
	}
	if got := post(path, token, distType, envelope("push", "shop/api", "v1", pushed)); got != http.StatusAccepted {
		t.Errorf("a replayed push: HTTP %d", got)
	}
	time.Sleep(2 * time.Second)
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ia), &v1alpha1.ImageAttestation{}); !apierrors.IsNotFound(err) {
		t.Errorf("a replayed push of a deleted image re-created its ImageAttestation: %v", err)
	}
	waitFor(t, reg, "counters in status", func(r *v1alpha1.Registry) bool {
		n := r.Status.Notifications
		return n != nil && n.Accepted >= 4 && n.Refused >= 5 && n.LastReceivedTime != nil
	})
	// The refusals are one event, not one per delivery, and it carries no delivery content.
	ev := waitForEvent(t, ns, "dist", "NotificationsRefused")
	if strings.Contains(ev.Note, "not-the-token") || !strings.Contains(ev.Note, "deliveries refused") {
		t.Errorf("refusal event %q", ev.Note)
	}
	list := &eventsv1.EventList{}
	if err := k8sClient.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Reason == "NotificationsRefused" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d NotificationsRefused events for one minute of refusals, want 1", n)
	}
}

// TestLookAgainEvent: a Harbor scan event is a "look again" for an image the inventory has. On a
// registry with the referrers API a signature attached as a referrer is no tag, so no listing sees
// it; the scan event that follows it has the image verified and judged again at once, with no
// listing and no API write to trigger it.
func TestLookAgainEvent(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	base := startReceiver(t)
	const token = "look-again-token-0123456789"
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	px := newProxy(t, srv.URL)
	host := strings.TrimPrefix(px.URL, "http://")
	img := registrytest.RandomImage(t)
	ref, err := name.ParseReference(host+"/shop/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	signer := verifytest.NewBundleSigner(t)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "harbor-like", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true,
		Interval: &metav1.Duration{Duration: 24 * time.Hour}, Notifications: &v1alpha1.NotificationsSpec{SecretRef: v1alpha1.LocalObjectReference{Name: "hook"}}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor-like"}, Repositories: []string{"**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release",
			Key: &v1alpha1.KeyAuthority{Data: string(signer.PublicPEM)}, IgnoreTransparencyLog: true}}}}}
	hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns}, Data: map[string][]byte{"token": []byte(token)}}
	for _, o := range []client.Object{hook, pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	requestPass(t, reg)
	unsigned := func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Status.Policies) == 1 && !ia.Status.Policies[0].Compliant && slices.Contains(ia.Status.Policies[0].Reasons, "SignatureMissing")
	}
	imageFor(t, ns, "shop/app", dg.String(), "unsigned at the listing", unsigned)

	digest, err := name.NewDigest(host+"/shop/app@"+dg.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	signer.SignBundle(t, digest)
	time.Sleep(time.Second)
	imageFor(t, ns, "shop/app", dg.String(), "still unsigned: nothing looked again", unsigned)

	before := px.snapshot()
	body := []byte(`{"type":"SCANNING_COMPLETED","occur_at":1678082303,"operator":"auto","event_data":{"resources":[{"digest":"` + dg.String() +
		`","tag":"v1","resource_url":"` + host + `/shop/app:v1","scan_overview":{"application/vnd.security.vulnerability.report; version=1.1":{"scan_status":"Success"}}}],` +
		`"repository":{"name":"app","namespace":"shop","repo_full_name":"shop/app","repo_type":"private"}}}`)
	deliver := func(what string, body []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+receiver.Path(reg.UID), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %v %v", what, resp, err)
		}
		_ = resp.Body.Close()
	}
	pushEvent := func(digest, tag string) []byte {
		return []byte(`{"type":"PUSH_ARTIFACT","occur_at":1678082303,"operator":"ci","event_data":{"resources":[{"digest":"` + digest +
			`","tag":"` + tag + `","resource_url":"` + host + `/shop/app:` + tag + `"}],"repository":{"name":"app","namespace":"shop","repo_full_name":"shop/app","repo_type":"private"}}}`)
	}
	deliver("a Harbor scan event", body)
	verified := imageFor(t, ns, "shop/app", dg.String(), "verified after the scan event", func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Status.Policies) == 1 && ia.Status.Policies[0].Compliant
	})
	// status.history, as the API server stored it: unsigned first, then compliant once signed.
	if h := verified.Status.History; len(h) != 2 || h[0].Verdict != v1alpha1.VerdictNonCompliant || h[0].Trigger != v1alpha1.TriggerFirstVerdict ||
		!slices.Contains(h[0].Reasons, "signed: SignatureMissing") || h[1].Verdict != v1alpha1.VerdictCompliant || h[1].Trigger != v1alpha1.TriggerSignatureChange {
		t.Errorf("verdict history: %+v; want NonCompliant (FirstVerdict, signed: SignatureMissing) then Compliant (SignatureChange)", h)
	}
	after := px.snapshot()
	if after["GET catalog"] != before["GET catalog"] || after["GET tags"] != before["GET tags"] || after["GET referrers"] == before["GET referrers"] {
		t.Errorf("requests for a look-again: %v -> %v; want referrers read and no listing", before, after)
	}

	// A push announced before its tag is readable (CNCF Distribution sends the event once the
	// manifest is stored, before it writes the tag): the event is retried, not dropped.
	late := registrytest.RandomImage(t)
	lateDigest, _ := late.Digest()
	deliver("a Harbor push event", pushEvent(lateDigest.String(), "v2"))
	time.Sleep(300 * time.Millisecond)
	lateRef, _ := name.ParseReference(host+"/shop/app:v2", name.Insecure)
	if err := remote.Write(lateRef, late); err != nil {
		t.Fatal(err)
	}
	imageFor(t, ns, "shop/app", lateDigest.String(), "a verdict for a push announced before its tag was written", func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Status.Policies) == 1
	})

	// The same for a tag that moves: the event for the new digest arrives while the registry still
	// answers the old one.
	moved := registrytest.RandomImage(t)
	movedDigest, _ := moved.Digest()
	deliver("a Harbor push event", pushEvent(movedDigest.String(), "v2"))
	time.Sleep(300 * time.Millisecond)
	if err := remote.Write(lateRef, moved); err != nil {
		t.Fatal(err)
	}
	imageFor(t, ns, "shop/app", movedDigest.String(), "a verdict for a tag's new digest announced before the tag moved", func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Status.Policies) == 1 && slices.Contains(ia.Spec.Tags, "v2")
	})
}
