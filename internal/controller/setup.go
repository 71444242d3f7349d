package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/store"
)

// Wiring is what SetupAll hands to the manager's other capabilities (the admission webhook).
type Wiring struct {
	// ResolveTag resolves repository:tag on reg to a digest with one manifest HEAD through the
	// Registry's own client (its limiter, request counter, credentials and CA). A Registry that
	// cannot be reached as configured is an error naming the reason.
	ResolveTag func(ctx context.Context, reg *v1alpha1.Registry, repository, tag string) (string, error)
	// Evaluate puts repository@digest (or the digest tag points at; both: tag must point at digest)
	// of reg into the inventory now, ahead of the next listing, so it is verified, scanned and
	// judged at once: one manifest request to the registry, then the ImageAttestation is created
	// (an existing one is left as it is). It returns the digest. The image must be one the Registry
	// watches and one of its policies selects.
	Evaluate func(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error)
	// Receiver is what the push receiver (package receiver) needs of the manager; ReceiverStatus
	// writes its counters to the Registries' status (add it to the manager with the receiver).
	Receiver       receiver.Target
	ReceiverStatus manager.Runnable
}

// SetupAll registers the controllers with mgr. Secrets and ConfigMaps are read through the
// manager's uncached API reader; the Registry and ImageAttestation controllers share registry clients.
// The verdict metrics read ImageAttestations from mgr's cache at each scrape.
func SetupAll(mgr ctrl.Manager, opts Options) (Wiring, error) {
	var w Wiring
	err := setupAll(mgr, opts, &w)
	return w, err
}

func setupAll(mgr ctrl.Manager, opts Options, w *Wiring) error {
	if err := registerIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	access := &registryAccess{apiReader: mgr.GetAPIReader(), options: opts}
	w.ResolveTag = access.resolveTag
	od := &onDemand{client: mgr.GetClient(), scheme: mgr.GetScheme(), access: access}
	w.Evaluate = od.evaluate
	rt := newReceiverTarget(od, mgr.GetAPIReader())
	rt.recorder = mgr.GetEventRecorder("portcullis-receiver")
	w.Receiver, w.ReceiverStatus = rt, rt
	if opts.VulnDBDir != "" || len(opts.VulnDBRepositories) > 0 {
		maxBlob := opts.MaxImageSize
		if maxBlob <= 0 {
			maxBlob = scan.DefaultMaxImageSize
		}
		relay, err := registry.NewRelay(maxBlob)
		if err != nil {
			return err
		}
		if err := mgr.Add(manager.RunnableFunc(relay.Serve)); err != nil {
			return err
		}
		access.relay = relay
	}
	recorder := mgr.GetEventRecorder("portcullis")
	images := imageWalker{informers: mgr.GetCache(), reader: mgr.GetClient()}
	verdicts.reader.Store(&images)
	rr := &RegistryReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Options: opts, access: access, Recorder: recorder, images: images}
	od.relist = rr.relistRepository
	if err := rr.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Registry controller: %w", err)
	}
	if err := (&RepositoryPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), images: images}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the RepositoryPolicy controller: %w", err)
	}
	ia := &ImageAttestationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Options: opts, access: access, Recorder: recorder,
		lookAgain: rt.lookAgain}
	if opts.CacheDir != "" {
		s, err := store.Open(filepath.Join(opts.CacheDir, "records.db"))
		if err != nil {
			return err
		}
		ia.records.store, ia.verification.store = s, s
		err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			defer s.Close()
			return pruneRecords(ctx, images, s)
		}))
		if err != nil {
			return err
		}
	}
	switch {
	case opts.VulnDBDir != "": // an offline DB (portcullis-vulndb, or copied in)
		t, err := newScanner(mgr, opts, opts.VulnDBDir)
		if err != nil {
			return fmt.Errorf("setting up the scanner: %w", err)
		}
		ia.Scanner = t
	case len(opts.VulnDBRepositories) > 0: // trivy's DB from an OCI repository, kept fresh
		t, err := downloadedScanner(mgr, opts)
		if err != nil {
			return err
		}
		ia.Scanner = t
	}
	if err := (&RetentionReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, access: access, images: images}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the retention controller: %w", err)
	}
	if err := (&HarborReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, access: access}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Harbor controller: %w", err)
	}
	if err := ia.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ImageAttestation controller: %w", err)
	}
	return nil
}

// dbRetry is how soon a failed DB refresh is tried again (or VulnDBRefresh, when shorter).
const dbRetry = 10 * time.Minute

// downloadedScanner downloads trivy's DB into CacheDir/db before the manager starts, when there is
// none or it is due (up to 10 minutes; config/default's startupProbe allows for it), and adds a
// runnable that refreshes it every VulnDBRefresh (default 12h). A failed download with an older DB in
// the cache is logged and retried after dbRetry while scans use the older DB; with no DB at all it is
// fatal, with the repositories in the error.
func downloadedScanner(mgr ctrl.Manager, opts Options) (reloadableScanner, error) {
	dbDir := filepath.Join(opts.CacheDir, "db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stale, err := scan.EnsureDB(ctx, opts.scannerAt(), dbDir, opts.VulnDBRepositories, opts.VulnDBInsecure)
	switch {
	case stale:
		ctrl.Log.WithName("vulndb").Error(err, "downloading the vulnerability DB failed; scanning with the older one in the cache until a refresh succeeds",
			"repositories", opts.VulnDBRepositories, "retryIn", dbRetry)
	case err != nil:
		return nil, fmt.Errorf("downloading the vulnerability DB from %v (no older DB in %s to fall back on): %w", opts.VulnDBRepositories, dbDir, err)
	}
	t, err := newScanner(mgr, opts, dbDir)
	if err != nil {
		return nil, fmt.Errorf("setting up the scanner: %w", err)
	}
	every := opts.VulnDBRefresh
	if every <= 0 {
		every = 12 * time.Hour
	}
	return t, mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		log := ctrl.LoggerFrom(ctx).WithName("vulndb")
		wait := every
		if stale {
			wait = min(every, dbRetry)
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
				updated, err := scan.UpdateDB(ctx, opts.scannerAt(), dbDir, opts.VulnDBRepositories, opts.VulnDBInsecure)
				if err != nil {
					log.Error(err, "refreshing the vulnerability DB; the current one stays in use", "retryIn", min(every, dbRetry))
					timer.Reset(min(every, dbRetry))
					continue
				}
				timer.Reset(every)
				if updated {
					if err := t.Reload(); err != nil {
						log.Error(err, "loading the refreshed vulnerability DB")
						continue
					}
					log.Info("vulnerability DB refreshed", "builtAt", t.DBUpdatedAt())
				}
			}
		}
	}))
}

// reloadableScanner is a scanner whose DB can be swapped under it after an update.
type reloadableScanner interface {
	scan.Scanner
	Reload() error
}

// newScanner opens the DB in dbDir in a scan worker (Options.ScannerCommand or ScannerAddress),
// stopped with the manager.
func newScanner(mgr ctrl.Manager, opts Options, dbDir string) (reloadableScanner, error) {
	at := opts.scannerAt()
	at.DBDir, at.CacheDir, at.MaxImageSize = dbDir, filepath.Join(opts.CacheDir, "trivy"), opts.MaxImageSize
	s, err := scan.NewIsolated(at)
	if err != nil {
		return nil, err
	}
	return s, mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return s.Close()
	}))
}
