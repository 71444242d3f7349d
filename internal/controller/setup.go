package controller

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
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
	if err := (&ImageAttestationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Options: opts, access: access}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ImageAttestation controller: %w", err)
	}
	return nil
}
