package controller

import (
	"context"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// ImageAttestationReconciler reconciles an ImageAttestation: the verdict for one digest. Until a
// verdict exists the object says so (Ready=Unknown, reason Pending), never that the image passed.
type ImageAttestationReconciler struct {
	client.Client
	Options Options
}

// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=imageattestations,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=imageattestations/status,verbs=get;update;patch

// Reconcile runs one pass for an ImageAttestation and writes its status with at most one patch.
func (r *ImageAttestationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return ctrl.Result{}, reconcileOnce(ctx, r.Client, req.NamespacedName, &v1alpha1.ImageAttestation{}, r.reconcile)
}

func (r *ImageAttestationReconciler) reconcile(ctx context.Context, obj *v1alpha1.ImageAttestation) (outcome, error) {
	initDomainConditions(obj)
	if o, ok, err := checkRegistryRef(ctx, r.Client, obj.Namespace, obj.Spec.RegistryRef.Name); !ok || err != nil {
		return o, err
	}
	return pending(v1alpha1.PendingReason, "no verdict yet for %s@%s", obj.Spec.Repository, obj.Spec.Digest), nil
}

// initDomainConditions sets each domain condition to Unknown when it is absent, so that a reader
// always finds every condition type (never a missing one read as success).
func initDomainConditions(obj *v1alpha1.ImageAttestation) {
	for _, c := range []struct{ t, reason, msg string }{
		{v1alpha1.SignatureVerifiedCondition, v1alpha1.NotVerifiedReason, "signatures have not been verified yet"},
		{v1alpha1.VulnerabilitiesScannedCondition, v1alpha1.NotScannedReason, "the digest has not been scanned yet"},
		{v1alpha1.PolicyCompliantCondition, v1alpha1.NotEvaluatedReason, "no policy has been evaluated yet"},
	} {
		if apimeta.FindStatusCondition(obj.Status.Conditions, c.t) == nil {
			apimeta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
				Type: c.t, Status: metav1.ConditionUnknown, Reason: c.reason, Message: c.msg, ObservedGeneration: obj.Generation,
			})
		}
	}
}

// SetupWithManager registers the controller: ImageAttestations on spec change, and the creation or
// deletion of the Registry they name.
func (r *ImageAttestationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.ImageAttestation{}, indexRegistryRef, func(o client.Object) []string {
		return []string{o.(*v1alpha1.ImageAttestation).Spec.RegistryRef.Name}
	}); err != nil {
		return err
	}
	newList := func() client.ObjectList { return &v1alpha1.ImageAttestationList{} }
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ImageAttestation{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(createOrDelete())).
		Named("imageattestation").
		Complete(r)
}
