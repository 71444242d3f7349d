package reports

import (
	"encoding/json"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// inventory is n ImageAttestations of reg judged by two policies, one in ten failing.
func inventory(reg *v1alpha1.Registry, n int) []v1alpha1.ImageAttestation {
	ias := make([]v1alpha1.ImageAttestation, n)
	for i := range ias {
		reasons := []string(nil)
		if i%10 == 0 {
			reasons = []string{"VulnerabilityThresholdExceeded"}
		}
		ias[i] = v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%016x", i), Namespace: reg.Namespace},
			Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: reg.Name}, Repository: fmt.Sprintf("team/app%d", i%50),
				Digest: fmt.Sprintf("sha256:%064x", i), Tags: []string{"v1", "latest"}},
			Status: v1alpha1.ImageAttestationStatus{Vulnerabilities: &v1alpha1.VulnerabilitySummary{High: 3, Unknown: 2},
				Policies: []v1alpha1.PolicyResult{{Name: "prod", Compliant: reasons == nil, Reasons: reasons}, {Name: "baseline", Compliant: true}}}}
	}
	return ias
}

// TestBuildBounded: a 5,000-image Registry's report holds maxResults results, the failures all
// first, and stays far below etcd's 1.5 MiB object limit; the summary counts all 10,000.
func TestBuildBounded(t *testing.T) {
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: "team"}}
	rep, omitted := Build(reg, []v1alpha1.RepositoryPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: v1alpha1.RepositoryPolicySpec{Mode: v1alpha1.ModeEnforce}}},
		inventory(reg, 5000), 0)
	if len(rep.Results) != DefaultMaxResults || omitted != 10000-DefaultMaxResults {
		t.Fatalf("%d results, %d omitted; want %d and %d", len(rep.Results), omitted, DefaultMaxResults, 10000-DefaultMaxResults)
	}
	if s := rep.Summary; s.Fail != 500 || s.Pass != 9500 {
		t.Errorf("summary %+v; want fail 500, pass 9500", s)
	}
	for i, r := range rep.Results {
		if (i < 500) != (r.Result == "fail") {
			t.Fatalf("result %d is %s; want the 500 failures first", i, r.Result)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1<<20 {
		t.Errorf("the report is %d bytes; want under 1 MiB", len(b))
	}
	t.Logf("a 1000-result report: %d KiB", len(b)>>10)
}

// BenchmarkBuild: building a 5,000-image Registry's report (what each write costs the manager).
func BenchmarkBuild(b *testing.B) {
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: "team"}}
	ias := inventory(reg, 5000)
	b.ReportAllocs()
	for b.Loop() {
		Build(reg, nil, ias, 0)
	}
}
