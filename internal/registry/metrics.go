package registry

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// requestsTotal counts HTTP requests to registries, exposed on the manager's /metrics as
// portcullis_registry_requests_total{registry="<namespace>/<name>", kind, code}. kind is one of
// ping, catalog, tags, manifest, blob, referrers, auth, other; code is the HTTP status or "error".
// Labels are bounded: no repository or tag.
var requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_registry_requests_total",
	Help: "HTTP requests sent to registries, by Registry, kind of request and status code.",
}, []string{"registry", "kind", "code"})

// requestRate is the request rate a Registry's client allows itself now, exposed as
// portcullis_registry_request_rate{registry="<namespace>/<name>"} (requests per second): the Registry's
// spec.requests.perSecond, lowered while the registry answers 429/503 (see adaptiveRate). Set once the
// rate first changes.
var requestRate = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "portcullis_registry_request_rate",
	Help: "Requests per second a Registry's client allows itself now: spec.requests.perSecond, lowered while the registry answers 429 or 503.",
}, []string{"registry"})

func init() {
	ctrlmetrics.Registry.MustRegister(Collectors()...)
}

// Collectors returns the metrics this package registers with controller-runtime's registry (served on
// the manager's /metrics), so documentation and dashboards can be checked against them.
func Collectors() []prometheus.Collector { return []prometheus.Collector{requestsTotal, requestRate} }

// requestKind names a distribution API request by its path
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#endpoints).
func requestKind(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return "ping"
	case path == "/v2/_catalog":
		return "catalog"
	case !strings.HasPrefix(path, "/v2/"):
		return "auth" // token endpoints live outside /v2/
	case strings.HasSuffix(path, "/tags/list"):
		return "tags"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.Contains(path, "/referrers/"):
		return "referrers"
	}
	return "other"
}

func codeLabel(code int) string {
	if code == 0 {
		return "error"
	}
	return strconv.Itoa(code)
}
