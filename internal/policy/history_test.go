package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestNonCompliantSince: the start of the current run of non-compliant verdicts, for the oldest
// non-compliance metric.
func TestNonCompliantSince(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(m int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(m) * time.Minute)) }
	ia := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(-5)}}
	if got := NonCompliantSince(ia); !got.Equal(at(-5).Time) {
		t.Errorf("no history: %v; want the creation time", got)
	}
	ia.Status.History = []v1alpha1.VerdictTransition{{Time: at(0), Verdict: v1alpha1.VerdictNonCompliant}, {Time: at(1), Verdict: v1alpha1.VerdictCompliant},
		{Time: at(2), Verdict: v1alpha1.VerdictNonCompliant}, {Time: at(3), Verdict: v1alpha1.VerdictNonCompliant}}
	if got := NonCompliantSince(ia); !got.Equal(at(2).Time) {
		t.Errorf("since %v; want the start of the last run of NonCompliant (%v)", got, at(2))
	}
}
