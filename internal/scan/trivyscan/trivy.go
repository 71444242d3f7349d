// Package trivyscan scans images with trivy used as a library: vulnerabilities (OS and language
// packages, Go binaries included), exposed secrets, and misconfigurations of the image config. It
// runs in the scanner process (cmd/portcullis-scanner), never in the manager: RunWorkerIfAsked serves
// scan.Isolated's requests and the vulnerability DB operations (scan.EnsureDB, scan.UpdateDB). trivy's
// types stay inside this package; callers see scan.Result.
package trivyscan

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	dbtypes "github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy/pkg/cache"
	"github.com/aquasecurity/trivy/pkg/fanal/applier"
	"github.com/aquasecurity/trivy/pkg/fanal/artifact"
	artimage "github.com/aquasecurity/trivy/pkg/fanal/artifact/image"
	"github.com/aquasecurity/trivy/pkg/fanal/image"
	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
	"github.com/aquasecurity/trivy/pkg/fanal/walker"
	tscan "github.com/aquasecurity/trivy/pkg/scan"
	"github.com/aquasecurity/trivy/pkg/scan/langpkg"
	"github.com/aquasecurity/trivy/pkg/scan/local"
	"github.com/aquasecurity/trivy/pkg/scan/ospkg"
	"github.com/aquasecurity/trivy/pkg/types"
	"github.com/aquasecurity/trivy/pkg/vulnerability"

	"github.com/portcullis-dev/portcullis/internal/scan"
)

// Trivy scans with trivy as a library against a vulnerability DB on disk. Layer analysis is cached
// on disk by layer digest (trivy's fs cache), so images sharing base layers are analysed once.
type Trivy struct {
	dbDir   string
	maxSize int64
	cache   cache.Cache
	closeC  func()
	service local.Service
	version string
	dbTime  metadataTime
	mu      sync.RWMutex // trivy-db's handle is process-global: scans read, Reload swaps
	// dbUpdated holds the open DB's build time (time.Time), read without the lock.
	dbUpdated atomic.Value
}

type metadataTime = func() (metadata.Metadata, error)

var _ scan.Scanner = (*Trivy)(nil)

// NewTrivy opens the DB in dbDir (trivy.db + metadata.json, as portcullis-vulndb or trivy's OCI DB
// artifact lay them out) and the layer cache in cacheDir. maxImageSize (bytes, 0: scan.DefaultMaxImageSize)
// refuses an image whose layers, compressed or uncompressed, are larger: a decompression bomb fails
// its scan with a reason instead of filling memory or disk.
func NewTrivy(dbDir, cacheDir string, maxImageSize int64) (*Trivy, error) {
	if maxImageSize <= 0 {
		maxImageSize = scan.DefaultMaxImageSize
	}
	for _, f := range []string{"trivy.db", "metadata.json"} {
		if _, err := os.Stat(filepath.Join(dbDir, f)); err != nil {
			return nil, fmt.Errorf("vulnerability DB: %w", err)
		}
	}
	if err := db.Init(dbDir); err != nil {
		return nil, fmt.Errorf("opening the vulnerability DB in %s: %w", dbDir, err)
	}
	fsCache, closeC, err := cache.New(cache.Options{Backend: "fs", CacheDir: cacheDir})
	if err != nil {
		return nil, fmt.Errorf("opening the scan cache in %s: %w", cacheDir, err)
	}
	c := &lockedCache{inner: fsCache}
	mc := metadata.NewClient(dbDir)
	t := &Trivy{dbDir: dbDir, maxSize: maxImageSize, cache: c, closeC: closeC, version: trivyVersion(), dbTime: mc.Get}
	t.service = t.newService(c)
	t.storeDBTime()
	return t, nil
}

// newService is trivy's local scan service reading layer analyses from c.
func (t *Trivy) newService(c cache.Cache) local.Service {
	return local.NewService(applier.NewApplier(c), ospkg.NewScanner(), langpkg.NewScanner(), vulnerability.NewClient(db.Config{}))
}

// DBUpdatedAt is when the vulnerability DB in use was built (zero when unknown): a newer DB makes
// earlier scans stale. It takes no lock, so it never waits for a scan or a reload.
func (t *Trivy) DBUpdatedAt() time.Time {
	if v, ok := t.dbUpdated.Load().(time.Time); ok {
		return v
	}
	return time.Time{}
}

// storeDBTime records the build time of the DB now open.
func (t *Trivy) storeDBTime() {
	if md, err := t.dbTime(); err == nil {
		t.dbUpdated.Store(md.UpdatedAt)
	}
}

// Close releases the cache and the DB.
func (t *Trivy) Close() error {
	t.closeC()
	return db.Close()
}

// Scan analyses the image from the registry (layers not in the cache are downloaded) and matches it
// against the DB. A panic inside trivy is recovered and returned as an error.
func (t *Trivy) Scan(ctx context.Context, ref string, access scan.Access) (res scan.Result, err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("trivy panicked scanning %s: %v", ref, r)
		}
	}()
	imgOpt := ftypes.ImageOptions{
		ImageSources: ftypes.ImageSources{ftypes.RemoteImageSource},
		// trivy's own size check downloads every layer to disk before the analysis, cached or not,
		// so a layer shared by many images would be downloaded for each. Instead the manifest's
		// compressed sizes are checked below, and each uncompressed layer is capped as it streams
		// into the analysis (escapeCounter): a layer already analysed is never downloaded again.
		MaxImageSize: 0,
		RegistryOptions: ftypes.RegistryOptions{
			Insecure: access.Insecure,
		},
	}
	if access.Username != "" {
		imgOpt.RegistryOptions.Credentials = []ftypes.Credential{{Username: access.Username, Password: access.Password}}
	}
	rawImg, cleanup, err := image.NewContainerImage(ctx, ref, imgOpt)
	if err != nil {
		return scan.Result{}, fmt.Errorf("opening %s: %w", ref, err)
	}
	defer cleanup()
	if err := checkCompressedSize(rawImg, t.maxSize); err != nil {
		return scan.Result{}, fmt.Errorf("scanning %s: %w", ref, err)
	}
	img := newEscapeCounter(rawImg, t.maxSize)
	// Offline: no Rekor SBOM look-ups for unpackaged binaries (the unpackaged post handler).
	// The tenant's own view of the analysis cache, and a service that reads the same view.
	ac, svc := cache.Cache(t.cache), t.service
	if access.Tenant != "" {
		ac = newTenantCache(t.cache, access.Tenant)
		svc = t.newService(ac)
	}
	art, err := artimage.NewArtifact(img, ac, artifact.Option{ImageOption: imgOpt, Offline: true, Parallel: 2,
		DisabledHandlers: []ftypes.HandlerType{ftypes.UnpackagedPostHandler},
		// Tar entries that escape the layer's root ("../x" after cleaning) are not part of the image
		// filesystem: skip them rather than analyse them under a path outside the root.
		WalkerOption: walker.Option{SkipFiles: []string{"../**"}, SkipDirs: []string{"../**"}}})
	if err != nil {
		return scan.Result{}, fmt.Errorf("preparing %s: %w", ref, err)
	}
	report, err := tscan.NewService(svc, art).ScanArtifact(ctx, types.ScanOptions{
		PkgTypes:         []string{types.PkgTypeOS, types.PkgTypeLibrary},
		PkgRelationships: ftypes.Relationships,
		Scanners:         types.Scanners{types.VulnerabilityScanner, types.SecretScanner},
		// The image config (user, healthcheck, history) is checked with trivy's embedded checks.
		ImageConfigScanners: types.Scanners{types.MisconfigScanner, types.SecretScanner},
		VulnSeveritySources: []dbtypes.SourceID{"auto"},
	})
	if err != nil {
		return scan.Result{}, fmt.Errorf("scanning %s: %w", ref, err)
	}
	res = convert(report)
	res.EscapingEntries = img.total()
	if report.Metadata.OS != nil {
		res.OS = strings.TrimSpace(string(report.Metadata.OS.Family) + " " + report.Metadata.OS.Name)
	}
	res.Scanner = "trivy " + t.version
	res.DBUpdatedAt = t.DBUpdatedAt()
	return res, nil
}

// checkCompressedSize refuses an image whose manifest says its config and layers, compressed, are
// over max bytes (the manifest is already fetched: no download).
func checkCompressedSize(img ftypes.Image, max int64) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	if total > max {
		return fmt.Errorf("compressed image size %d bytes exceeds maximum allowed size %d bytes", total, max)
	}
	return nil
}

// convert maps trivy's report to Result.
func convert(r types.Report) scan.Result {
	var out scan.Result
	for _, res := range r.Results {
		for _, v := range res.Vulnerabilities {
			out.Vulnerabilities = append(out.Vulnerabilities, scan.Vulnerability{
				ID: v.VulnerabilityID, Package: v.PkgName, InstalledVersion: v.InstalledVersion,
				FixedVersion: v.FixedVersion, Severity: v.Severity, Title: v.Title,
			})
		}
		for _, s := range res.Secrets {
			out.Secrets = append(out.Secrets, scan.Secret{RuleID: s.RuleID, Severity: s.Severity, Path: res.Target, Line: s.StartLine})
		}
		for _, m := range res.Misconfigurations {
			if m.Status == types.MisconfStatusFailure {
				out.Misconfigurations = append(out.Misconfigurations, scan.Misconfiguration{ID: m.ID, Severity: m.Severity, Title: m.Title})
			}
		}
	}
	return out
}

// trivyVersion is the trivy module version linked into this binary.
func trivyVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/aquasecurity/trivy" {
				return d.Version
			}
		}
	}
	return "unknown"
}
