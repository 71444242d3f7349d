// Package scan scans images with trivy used as a library, in-process: vulnerabilities (OS and
// language packages, Go binaries included), exposed secrets, and misconfigurations of the image
// config. trivy's types stay inside this package; callers see Result.
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
