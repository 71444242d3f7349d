package controller

import (
	"fmt"
	"path/filepath"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/portcullis-dev/portcullis/internal/scan"
)

// SetupAll registers the three controllers with mgr. Secrets and ConfigMaps are read through the
// manager's uncached API reader; the Registry and ImageAttestation controllers share registry clients.
func SetupAll(mgr ctrl.Manager, opts Options) error {
	access := &registryAccess{apiReader: mgr.GetAPIReader(), options: opts}
	if err := (&RegistryReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Options: opts, access: access}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Registry controller: %w", err)
	}
	if err := (&RepositoryPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the RepositoryPolicy controller: %w", err)
	}
	ia := &ImageAttestationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Options: opts, access: access}
	if opts.VulnDBDir != "" {
		t, err := scan.NewTrivy(opts.VulnDBDir, filepath.Join(opts.CacheDir, "trivy"), opts.MaxImageSize)
		if err != nil {
			return fmt.Errorf("setting up the scanner: %w", err)
		}
		ia.Scanner = t
	}
	if err := ia.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ImageAttestation controller: %w", err)
	}
	return nil
}
