// Package controller holds the reconcilers of Registry, RepositoryPolicy and ImageAttestation. They
// are thin: each Reconcile fetches its object, runs a flat list of named steps, and writes the
// outcome as kstatus conditions with one status patch.
package controller

import (
	"net/url"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/scan"
)

// Options are the manager-wide settings the controllers share, set from cmd/main.go flags.
type Options struct {
	// AllowedRegistryHosts are doublestar patterns (e.g. `*.example.com`, `registry.internal:5000`)
	// of the registry hosts tenants may point a Registry at, matched against the URL's host and
	// host:port. Empty allows every host. Cluster admins use it to stop a tenant from making the
	// operator call internal addresses.
	AllowedRegistryHosts []string

	// Egress is checked at dial time by every connection made for a Registry (its registry, token
	// realm and redirects, the scanner's downloads through the relay, Harbor's API): see package
	// egress. nil checks nothing (tests); the manager always sets one (--egress-allow, --egress-deny).
	Egress *egress.Policy

	// AllowInsecureRegistries allows plain http to non-loopback hosts (loopback is always allowed
	// with spec.insecure).
	AllowInsecureRegistries bool

	// ScanConcurrency is how many digests are scanned at once.
	ScanConcurrency int

	// VerdictConcurrency is how many ImageAttestations are reconciled at once (verification, verdict,
	// status write); at most ScanConcurrency of them scan at a time. 0 means ScanConcurrency.
	VerdictConcurrency int

	// CacheDir holds the scan caches (trivy's layer cache under CacheDir/trivy) and the durable
	// per-digest records (CacheDir/records.db: findings and verification results). Empty keeps
	// records in memory only.
	CacheDir string

	// VulnDBDir is the folder with trivy.db and metadata.json (built by portcullis-vulndb, or trivy's
	// DB artifact). Empty turns scanning off: images then say VulnerabilitiesScanned=False/NotScanned
	// and never pass a policy because of it.
	VulnDBDir string

	// VulnDBRepositories, when VulnDBDir is empty, are OCI repositories of trivy's vulnerability DB
	// (trivy's defaults or a mirror) to download it from into CacheDir/db, refreshed every
	// VulnDBRefresh. VulnDBInsecure allows a plain-http mirror.
	VulnDBRepositories []string
	VulnDBRefresh      time.Duration
	VulnDBInsecure     bool

	// MaxImageSize refuses to scan an image larger than this many bytes, compressed or uncompressed
	// (0: the scanner's default, 10 GiB).
	MaxImageSize int64

	// TrivyOperatorReports also writes each scan as trivy-operator's VulnerabilityReport and
	// ExposedSecretReport (size-capped), for dashboards and exporters built for trivy-operator. Its
	// CRDs must be installed.
	TrivyOperatorReports bool

	// ScannerCommand starts the scanner process (cmd/portcullis-scanner, the one binary that links
	// trivy): a long-lived scan worker (scan.Isolated) and each vulnerability DB download run in it,
	// so a panic in one of trivy's goroutines or a fault ends only the worker (the scans in flight
	// fail with ScanFailed and a new worker starts), and the manager's memory holds none of trivy.
	// Empty: this executable (a test binary that serves as its own worker).
	ScannerCommand []string

	// ScannerAddress, when set, is the Unix socket of a scanner that runs on its own
	// (portcullis-scanner --listen: the scanner container of config/manager, with no ServiceAccount
	// token and its own resource limits); ScannerCommand is then unused. The DB and cache paths
	// (CacheDir/db, CacheDir/trivy, VulnDBDir) are paths in the scanner's file system, where
	// config/manager mounts the scanner's own volume at the manager's CacheDir.
	ScannerAddress string
}

// scannerAt says where scanner processes run: started as children or listening at an address.
func (o Options) scannerAt() scan.WorkerConfig {
	at := scan.WorkerConfig{Command: o.ScannerCommand, Address: o.ScannerAddress}
	if o.Egress != nil {
		at.Egress = &scan.EgressRules{}
		for _, r := range o.Egress.Allow {
			at.Egress.Allow = append(at.Egress.Allow, r.String())
		}
		for _, r := range o.Egress.Deny {
			at.Egress.Deny = append(at.Egress.Deny, r.String())
		}
	}
	return at
}

// hostAllowed reports whether the URL's host matches AllowedRegistryHosts (or the list is empty).
// Invalid patterns never match.
func (o Options) hostAllowed(u *url.URL) bool {
	if len(o.AllowedRegistryHosts) == 0 {
		return true
	}
	host, hostport := strings.ToLower(u.Hostname()), strings.ToLower(u.Host)
	for _, p := range o.AllowedRegistryHosts {
		p = strings.ToLower(p)
		if ok, _ := doublestar.Match(p, host); ok {
			return true
		}
		if ok, _ := doublestar.Match(p, hostport); ok {
			return true
		}
	}
	return false
}
