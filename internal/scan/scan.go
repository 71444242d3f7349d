// Package scan is the manager's side of image scanning: the Scanner interface, the Result it returns
// (vulnerabilities of OS and language packages, Go binaries included, exposed secrets, and
// misconfigurations of the image config), and Isolated, which runs every scan in a scanner process
// (cmd/portcullis-scanner, package trivyscan, which links trivy). The manager itself does not link
// trivy: a fault in trivy ends only the scanner process, and the manager binary stays small (its
// resident memory at 10,000 images is the budget; see docs/performance.md).
package scan

import (
	"context"
	"time"
)

// Scanner scans one image reference (registry/repository@digest).
type Scanner interface {
	Scan(ctx context.Context, image string, access Access) (Result, error)
	// DBUpdatedAt is when the vulnerability DB was built; a scan older than it is stale.
	DBUpdatedAt() time.Time
}

// Access says how to reach the registry (credentials, plain http) and what is known of the image.
type Access struct {
	Username, Password string
	Insecure           bool
	// Tenant scopes the layer-analysis cache: an analysis is reused only by scans with the same
	// Tenant (the Registry's namespace), so one tenant's registry that names another tenant's layer
	// digests is never answered from that tenant's analysis. Empty: one shared scope.
	Tenant string
	// SizeChecked says the digest already passed the size limit in an earlier scan. The limit is
	// now checked without downloading (compressed sizes from the manifest, uncompressed layers
	// capped as they stream), so this no longer changes what a scan downloads; kept for callers.
	SizeChecked bool
}

// Result is what a scan found. Severity is trivy's (UNKNOWN when the source gives none).
type Result struct {
	Vulnerabilities   []Vulnerability
	Secrets           []Secret
	Misconfigurations []Misconfiguration
	// EscapingEntries counts the tar entries whose path leaves a layer's root ("../x"); they are
	// skipped, not analysed. -1 when no layer was read (every layer came from the analysis cache).
	EscapingEntries int
	// OS is the detected distribution ("debian 12.5"), empty when none was found.
	OS string
	// Scanner and DBUpdatedAt name the scanner version and the vulnerability DB's build time.
	Scanner     string
	DBUpdatedAt time.Time
}

// Vulnerability is one advisory matching one installed package.
type Vulnerability struct {
	ID, Package, InstalledVersion, FixedVersion, Severity, Title string
}

// Secret is one exposed secret: rule and place, never the matched text.
type Secret struct {
	RuleID, Severity, Path string
	Line                   int
}

// Misconfiguration is one failed check of the image config.
type Misconfiguration struct {
	ID, Severity, Title string
}

// DefaultMaxImageSize is the default limit on an image's size, compressed and uncompressed, in bytes
// (10 GiB).
const DefaultMaxImageSize = 10 << 30
