package admission

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// admissions counts requests by decision (admitted, warned, refused, break-glass, error),
	// namespace and objecting policy ("" when none objected). No per-image label: bounded by the
	// number of namespaces and policies.
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_admission_requests_total",
		Help: "Admission requests judged by the image webhook, by decision (admitted, warned, refused, break-glass, error), namespace and objecting RepositoryPolicy (namespace/name, empty when none objected).",
	}, []string{"decision", "namespace", "policy"})
	admissionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "portcullis_admission_duration_seconds",
		Help:    "Time the image webhook took to decide, by decision.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5},
	}, []string{"decision"})
)

func init() {
	metrics.Registry.MustRegister(admissions, admissionSeconds)
}

// observe counts one request under each objecting policy (once each), or under "" when none.
func observe(namespace string, decisions []ImageDecision, decision string, start time.Time) {
	admissionSeconds.WithLabelValues(decision).Observe(time.Since(start).Seconds())
	seen := map[string]bool{}
	for _, d := range decisions {
		for _, f := range d.Findings {
			if p := f.Policy.String(); f.Policy.Name != "" && !seen[p] {
				seen[p] = true
				admissions.WithLabelValues(decision, namespace, p).Inc()
			}
		}
	}
	if len(seen) == 0 {
		admissions.WithLabelValues(decision, namespace, "").Inc()
	}
}
