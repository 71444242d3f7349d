package policy

import (
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// NonCompliantSince is when ia's current non-compliance began: the first entry of the trailing run
// of NonCompliant entries of status.history (the oldest the history keeps, when all are), or the
// image's creation when the history has none.
func NonCompliantSince(ia *v1alpha1.ImageAttestation) time.Time {
	h := ia.Status.History
	i := len(h)
	for i > 0 && h[i-1].Verdict == v1alpha1.VerdictNonCompliant {
		i--
	}
	if i == len(h) {
		return ia.CreationTimestamp.Time
	}
	return h[i].Time.Time
}
