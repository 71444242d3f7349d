package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// registryPasses is the time of each Registry's last complete listing, exposed as
// portcullis_registry_last_listing_timestamp_seconds{registry="<namespace>/<name>"}: the freshness
// signal that status.lastSyncTime (written only on change) does not give.
var registryPasses = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "portcullis_registry_last_listing_timestamp_seconds",
	Help: "Unix time of the last complete listing of each Registry.",
}, []string{"registry"})

// escapingEntries counts tar entries whose path left a layer's root; they are skipped, not scanned.
var escapingEntries = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "portcullis_scan_escaping_tar_entries_total",
	Help: "Tar entries whose path leaves the layer root, skipped by the scanner.",
})

func init() {
	ctrlmetrics.Registry.MustRegister(registryPasses, escapingEntries)
}
