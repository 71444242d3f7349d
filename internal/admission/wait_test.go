package admission

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestWaitFor(t *testing.T) {
	wait := func(name string, mode v1alpha1.PolicyMode, d time.Duration) v1alpha1.RepositoryPolicy {
		p := v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "inv", Name: name}, Spec: v1alpha1.RepositoryPolicySpec{Mode: mode}}
		if d > 0 {
			p.Spec.Admission = &v1alpha1.AdmissionSpec{WaitForVerdict: &metav1.Duration{Duration: d}}
		}
		return p
	}
	cov := []Coverage{{Registry: types.NamespacedName{Namespace: "inv", Name: "reg"}, Policies: []v1alpha1.RepositoryPolicy{
		wait("enforce-3s", v1alpha1.ModeEnforce, 3*time.Second), wait("enforce-none", v1alpha1.ModeEnforce, 0),
		wait("audit-5s", v1alpha1.ModeAudit, 5*time.Second), wait("audit-none", v1alpha1.ModeAudit, 0)}}}
	finding := func(name string, mode v1alpha1.PolicyMode, reasons ...string) Finding {
		return Finding{Policy: types.NamespacedName{Namespace: "inv", Name: name}, Mode: mode, Reasons: reasons}
	}
	for _, c := range []struct {
		name     string
		findings []Finding
		want     time.Duration
	}{
		{name: "nothing to wait for", want: 0},
		{name: "not evaluated, the policy waits", findings: []Finding{finding("enforce-3s", v1alpha1.ModeEnforce, ReasonNotEvaluated)}, want: 3 * time.Second},
		{name: "not evaluated, the policy does not wait", findings: []Finding{finding("enforce-none", v1alpha1.ModeEnforce, ReasonNotEvaluated)}, want: 0},
		{name: "a refusal that stands whatever the wait", findings: []Finding{finding("enforce-3s", v1alpha1.ModeEnforce, ReasonNotEvaluated),
			finding("enforce-none", v1alpha1.ModeEnforce, "SignatureMissing")}, want: 0},
		{name: "an unresolved tag is not waited for", findings: []Finding{finding("enforce-3s", v1alpha1.ModeEnforce, ReasonTagNotResolved)}, want: 0},
		{name: "an Audit objection does not stop the wait", findings: []Finding{finding("enforce-3s", v1alpha1.ModeEnforce, ReasonNotEvaluated),
			finding("audit-none", v1alpha1.ModeAudit, "SignatureMissing")}, want: 3 * time.Second},
		{name: "the longest wait of the policies", findings: []Finding{finding("enforce-3s", v1alpha1.ModeEnforce, ReasonNotEvaluated),
			finding("audit-5s", v1alpha1.ModeAudit, ReasonNotEvaluated)}, want: 5 * time.Second},
		{name: "a policy of another namespace", findings: []Finding{{Policy: types.NamespacedName{Namespace: "other", Name: "enforce-3s"},
			Mode: v1alpha1.ModeEnforce, Reasons: []string{ReasonNotEvaluated}}}, want: 0},
	} {
		if got := WaitFor(ImageDecision{Findings: c.findings}, cov); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestWaitForVerdict: under a policy with spec.admission.waitForVerdict, an image the inventory
// does not know is evaluated on demand once and the webhook decides on the verdict that arrives
// while it waits (admitted when compliant, refused with the verdict's reasons when not); a verdict
// that does not arrive in time is refused as NotEvaluated; a policy without the field never
// evaluates or waits.
func TestWaitForVerdict(t *testing.T) {
	f := startFixture(t)
	ctx := context.Background()
	host := f.reg.host()
	f.create(t, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "reg"},
		Spec: v1alpha1.RegistrySpec{URL: f.reg.URL, Insecure: true}})
	waiting := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "waiting"},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: []string{"shop/**"},
			Mode: v1alpha1.ModeEnforce, Admission: &v1alpha1.AdmissionSpec{WaitForVerdict: &metav1.Duration{Duration: 3 * time.Second}}}}
	quick := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "quick"},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: []string{"labs/**"},
			Mode: v1alpha1.ModeEnforce}}
	f.create(t, waiting)
	f.create(t, quick)
	// As the controllers would: the ImageAttestation at once, its verdict a moment later (none for
	// tags in silent).
	verdicts := map[string][]string{"v5": nil, "v2": {"SignatureMissing"}}
	var evaluate Evaluator = func(ctx context.Context, reg *v1alpha1.Registry, repo, tag, digest string) (string, error) {
		ia := &v1alpha1.ImageAttestation{
			ObjectMeta: metav1.ObjectMeta{Namespace: reg.Namespace, Name: v1alpha1.ImageAttestationName(reg.Name, repo, digest)},
			Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: reg.Name}, Repository: repo,
				Digest: digest, Tags: []string{tag}},
		}
		if err := f.c.Create(ctx, ia); err != nil {
			return "", err
		}
		reasons, judged := verdicts[tag]
		if judged {
			go func() {
				time.Sleep(300 * time.Millisecond)
				ia.Status.Policies = []v1alpha1.PolicyResult{{Name: waiting.Name, ObservedGeneration: waiting.Generation,
					Compliant: len(reasons) == 0, Reasons: reasons}}
				if err := f.c.Status().Update(context.Background(), ia); err != nil {
					t.Error(err)
				}
			}()
		}
		return digest, nil
	}
	f.evaluate.Store(&evaluate)
	probe := f.reg.push(t, "shop/api", "v1") // judged already: waitForCache's probe
	f.attest(t, "shop/api", probe, []string{"v1"}, v1alpha1.PolicyResult{Name: waiting.Name, ObservedGeneration: waiting.Generation, Compliant: true})
	compliant := f.reg.push(t, "shop/api", "v5")
	f.reg.push(t, "shop/api", "v2")
	silent := f.reg.push(t, "shop/api", "silent")
	f.reg.push(t, "labs/tool", "v1")
	apps := "apps"
	f.namespace(t, apps, true)
	waitForCache(t, f, host)

	n := f.evaluations.Load()
	if err := f.c.Create(ctx, deployment(apps, "new", host+"/shop/api:v5")); err != nil {
		t.Fatalf("an image judged compliant while the webhook waited: %v", err)
	}
	if got := f.evaluations.Load() - n; got != 1 {
		t.Errorf("%d on-demand evaluations for one new image, want 1", got)
	}
	refused(t, f.c.Create(ctx, deployment(apps, "bad", host+"/shop/api:v2")), "SignatureMissing")
	n = f.evaluations.Load()
	err := f.c.Create(ctx, deployment(apps, "silent", host+"/shop/api:silent"))
	refused(t, err, "NotEvaluated", silent)
	if got := f.evaluations.Load() - n; got != 1 {
		t.Errorf("%d on-demand evaluations for the silent image, want 1", got)
	}
	// Known now (its ImageAttestation exists) but still without a verdict: refused, not evaluated again.
	refused(t, f.c.Create(ctx, deployment(apps, "silent-again", host+"/shop/api:silent")), "NotEvaluated")
	if got := f.evaluations.Load() - n; got != 1 {
		t.Errorf("%d on-demand evaluations after the second try, want still 1", got)
	}
	n = f.evaluations.Load()
	refused(t, f.c.Create(ctx, deployment(apps, "labs", host+"/labs/tool:v1")), "NotEvaluated")
	if got := f.evaluations.Load() - n; got != 0 {
		t.Errorf("a policy without waitForVerdict evaluated %d images on demand", got)
	}
	if !strings.HasPrefix(compliant, "sha256:") {
		t.Fatalf("digest %q", compliant)
	}
}
