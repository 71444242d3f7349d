package controller

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestGitOpsHealth drives every kind through the states a GitOps tool sees, using objects written by
// the real controllers, and checks both health readers on each: kstatus (Flux, `kubectl wait`,
// cli-utils) and the Argo CD health check shipped in config/argocd/health.lua, run in a Lua
// interpreter the way Argo CD runs it (the object as the global `obj`, a table {status, message}
// returned).
func TestGitOpsHealth(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	dist.Push(t, "health/app", "v1", registrytest.RandomImage(t))
	otherDigest := dist.Push(t, "other/app", "v1", registrytest.RandomImage(t)) // no policy selects it
	closed := closedPortURL(t)

	create := func(obj client.Object) {
		t.Helper()
		obj.SetNamespace(ns)
		if err := k8sClient.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	registry := func(name, url string, mutate func(*v1alpha1.Registry)) *v1alpha1.Registry {
		r := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RegistrySpec{URL: url, Insecure: true}}
		if mutate != nil {
			mutate(r)
		}
		create(r)
		return r
	}
	policy := func(name, registry string) *v1alpha1.RepositoryPolicy {
		p := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: registry}, Repositories: []string{"health/**"}}}
		create(p)
		return p
	}

	type want struct {
		kstatus status.Status
		argo    string
	}
	check := func(what string, obj statusObject, w want) {
		t.Helper()
		if res := kstatusOf(t, obj); res.Status != w.kstatus {
			t.Errorf("%s: kstatus %s (%s), want %s", what, res.Status, res.Message, w.kstatus)
		}
		if got, msg := argoHealth(t, obj); got != w.argo {
			t.Errorf("%s: Argo CD health %s (%s), want %s", what, got, msg, w.argo)
		} else {
			t.Logf("%s: kstatus %s, Argo CD %s: %s", what, w.kstatus, got, msg)
		}
	}
	inProgress := want{status.InProgressStatus, "Progressing"}

	// Registry.
	fresh := registry("fresh", closed, nil)
	if fresh.Status.ObservedGeneration == -1 { // the create response carries the CRD default
		check("Registry before its first reconcile", fresh, inProgress)
	} else {
		t.Errorf("create response has status.observedGeneration %d, want the CRD default -1", fresh.Status.ObservedGeneration)
	}
	up := waitFor(t, registry("up", dist.URL, nil), "Ready", isReady)
	check("Registry listed", up, want{status.CurrentStatus, "Healthy"})
	edited := up.DeepCopy() // as read between a spec edit and the controller's next pass
	edited.Generation++
	check("Registry just edited", edited, inProgress)
	down := waitFor(t, fresh, "Reconciling with Ready=False", func(r *v1alpha1.Registry) bool {
		return hasConditionStatus(r, v1alpha1.ReconcilingCondition, metav1.ConditionTrue) &&
			hasConditionStatus(r, v1alpha1.ReadyCondition, metav1.ConditionFalse)
	})
	check("Registry unreachable, retried", down, want{status.InProgressStatus, "Degraded"})
	noSecret := waitFor(t, registry("no-secret", dist.URL, func(r *v1alpha1.Registry) {
		r.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: "missing"}
	}), "Stalled", isStalled(v1alpha1.SecretNotFoundReason))
	check("Registry with a missing Secret", noSecret, want{status.FailedStatus, "Degraded"})
	suspended := waitFor(t, registry("suspended", dist.URL, func(r *v1alpha1.Registry) { r.Spec.Suspend = true }),
		"observed while suspended", func(r *v1alpha1.Registry) bool { return r.Status.ObservedGeneration == r.Generation })
	check("Registry suspended", suspended, want{status.CurrentStatus, "Suspended"})

	// RepositoryPolicy.
	orphan := policy("orphan", "absent")
	if orphan.Status.ObservedGeneration == -1 {
		check("RepositoryPolicy before its first reconcile", orphan, inProgress)
	} else {
		t.Errorf("create response has status.observedGeneration %d, want the CRD default -1", orphan.Status.ObservedGeneration)
	}
	orphan = waitFor(t, orphan, "Stalled", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.RegistryNotFoundReason)
	})
	check("RepositoryPolicy without its Registry", orphan, want{status.FailedStatus, "Degraded"})
	good := waitFor(t, policy("good", "up"), "Ready", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasConditionStatus(p, v1alpha1.ReadyCondition, metav1.ConditionTrue) && p.Status.ObservedGeneration == p.Generation
	})
	check("RepositoryPolicy evaluated", good, want{status.CurrentStatus, "Healthy"})

	// ImageAttestation: the one the Registry wrote for the image the policy selects, one for an image
	// no policy selects, and one whose Registry does not exist.
	var found *v1alpha1.ImageAttestation
	waitFor(t, up, "an ImageAttestation for health/app", func(*v1alpha1.Registry) bool {
		var list v1alpha1.ImageAttestationList
		if err := k8sClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false
		}
		for i := range list.Items {
			if list.Items[i].Spec.Repository == "health/app" {
				found = &list.Items[i]
			}
		}
		return found != nil
	})
	judged := waitFor(t, found, "Ready with a verdict", func(i *v1alpha1.ImageAttestation) bool {
		return hasConditionStatus(i, v1alpha1.ReadyCondition, metav1.ConditionTrue) && i.Status.ObservedGeneration == i.Generation
	})
	check("ImageAttestation judged", judged, want{status.CurrentStatus, "Healthy"})
	stray := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: "stray"}, Spec: v1alpha1.ImageAttestationSpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "absent"}, Repository: "health/app", Digest: judged.Spec.Digest}}
	create(stray)
	stray = waitFor(t, stray, "Stalled", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.RegistryNotFoundReason)
	})
	check("ImageAttestation of a missing Registry", stray, want{status.FailedStatus, "Degraded"})
	unjudged := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: "unjudged"}, Spec: v1alpha1.ImageAttestationSpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "up"}, Repository: "other/app", Digest: otherDigest}}
	create(unjudged)
	unjudged = waitFor(t, unjudged, "Reconciling, no policy selects it", func(i *v1alpha1.ImageAttestation) bool {
		return hasConditionStatus(i, v1alpha1.ReconcilingCondition, metav1.ConditionTrue) &&
			hasConditionStatus(i, v1alpha1.ReadyCondition, metav1.ConditionUnknown)
	})
	check("ImageAttestation no policy selects", unjudged, inProgress)
}

// argoHealth runs config/argocd/health.lua on obj as Argo CD does and returns its status and message.
func argoHealth(t *testing.T, obj client.Object) (string, string) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("..", "..", "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, m))
	if err := L.DoString(string(script)); err != nil {
		t.Fatalf("health.lua: %v", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
}

// toLua converts a JSON-shaped value to Lua as Argo CD's runtime does: objects and arrays become
// tables (arrays 1-based), numbers become numbers.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		panic("toLua: unexpected JSON type")
	}
}

// closedPortURL returns a plain-http URL on a loopback port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr
}
