package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// ImageAttestationReconciler reconciles an ImageAttestation: the verdict for one digest. It verifies
// the signatures and attestations every selecting policy requires, scans the digest when due, and
// computes each policy's verdict (PolicyCompliant). Ready=True means the verdict is current for the
// digest and the policies' generations, whether or not the image complies.
type ImageAttestationReconciler struct {
	client.Client
	// APIReader reads key Secrets and trusted-root ConfigMaps uncached.
	APIReader client.Reader
	Options   Options

	// Scanner scans images; nil turns scanning off (VulnerabilitiesScanned=False/NotScanned).
	Scanner scan.Scanner
	// Recorder emits verdict transition events; nil emits none.
	Recorder events.EventRecorder

	access       *registryAccess
	verification verification
	records      scanRecords
	// scanSlots bounds the scans in flight (Options.ScanConcurrency) among the concurrent reconciles.
	scanSlots chan struct{}
	// fair orders new and changed digests across Registries and namespaces in the queue.
	fair *fairShare
	// signers holds the policies' verdict signing keys (spec.verdictAttestation).
	signers verdictSigners
	// lookAgain, when set, queues ImageAttestations to reconcile as if changed (the push receiver's
	// LookAgain) with no API write.
	lookAgain <-chan event.GenericEvent
}

// RBAC is exactly what the manager uses (test/e2e TestInstall checks it against the API server's audit
// log): reads go through the cache (list, watch), writes are create, merge patches and delete.
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=imageattestations,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=imageattestations/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs one pass for an ImageAttestation and writes its status with at most one patch. It
// comes back after the Registry's interval to look for signatures added since.
func (r *ImageAttestationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	defer r.fair.done(req.NamespacedName)
	var requeue bool
	var interval = defaultInterval
	err := reconcileOnce(ctx, r.Client, req.NamespacedName, &v1alpha1.ImageAttestation{},
		func(ctx context.Context, ia *v1alpha1.ImageAttestation) (outcome, error) {
			o, reg, err := r.reconcile(ctx, ia)
			if reg != nil {
				requeue, interval = true, registryInterval(reg)
			}
			return o, err
		})
	if err != nil || !requeue {
		return ctrl.Result{}, err
	}
	// The periodic look-again waits behind new and changed digests of every Registry (controller-runtime's
	// priority queue, fairShare), so a large inventory's re-checks never delay a first verdict.
	return ctrl.Result{RequeueAfter: interval, Priority: ptrTo(recheckPriority)}, nil
}

func (r *ImageAttestationReconciler) reconcile(ctx context.Context, ia *v1alpha1.ImageAttestation) (outcome, *v1alpha1.Registry, error) {
	initDomainConditions(ia)
	prior := inputsOf(ia)
	reg := &v1alpha1.Registry{}
	if o, ok, err := getRegistry(ctx, r.Client, ia.Namespace, ia.Spec.RegistryRef.Name, reg); !ok || err != nil {
		return o, nil, err
	}
	rc, o, ok, err := r.access.client(ctx, reg)
	if err != nil {
		return o, nil, err
	}
	if !ok { // the Registry itself says why (Stalled); look again after its interval
		return pending(v1alpha1.PendingReason, "the Registry %q cannot be reached as configured: %s", reg.Name, o.message), reg, nil
	}
	all := &v1alpha1.RepositoryPolicyList{}
	if err := r.List(ctx, all, client.InNamespace(ia.Namespace), client.MatchingFields{indexRegistryRef: reg.Name}); err != nil {
		return failed(v1alpha1.ReadFailedReason, err), nil, err
	}
	// The cache's index order is random: sort, so an unchanged verdict is written the same way.
	slices.SortFunc(all.Items, func(a, b v1alpha1.RepositoryPolicy) int { return strings.Compare(a.Name, b.Name) })
	policies := selectingPolicies(all.Items, ia)
	sigs, err := r.verifySignatures(ctx, ia, reg, rc, policies)
	if err != nil {
		reason := v1alpha1.RegistryUnavailableReason
		if !errors.Is(err, verify.ErrRegistry) {
			reason = v1alpha1.ReadFailedReason
		}
		// The last verdict stays; the pass is retried with backoff.
		return outcome{kind: outcomeFailed, reason: reason, message: "verifying signatures: " + truncate(err.Error(), 512) + "; the last verdict is kept"}, reg, err
	}
	rec, state, scanErr := r.scanImage(ctx, ia, reg, rc, policies)
	if scanErr != nil && state != policy.ScanFailedState && rec == nil && needsFindings(policies) {
		// An earlier scan stands but its findings are no longer in memory: the last verdict is kept
		// until a scan succeeds again.
		return outcome{kind: outcomeFailed, reason: scanFailedReason, message: "scanning: " + truncate(scanErr.Error(), 512) + "; the last results and verdict are kept"}, reg, scanErr
	}
	if scanErr != nil && rec == nil {
		rec = &scanRecord{} // no policy needs findings: the verdict is computed from signatures alone
	}
	before := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition).DeepCopy()
	if before != nil && before.Reason == v1alpha1.NotEvaluatedReason {
		before = nil
	}
	attested := map[string]string{}
	for _, res := range ia.Status.Policies {
		attested[res.Name] = res.Attested
	}
	now := time.Now()
	summary := evaluate(ia, policies, sigs, rec, state, now)
	recordTransition(ia, prior, now)
	if scanErr == nil || state == policy.ScanDone {
		r.attestVerdicts(ctx, ia, reg, rc, policies, attested)
	}
	after := verdictTransition(r.Recorder, ia, before)
	immutabilityEvent := immutabilityCondition(r.Recorder, ia, policies)
	switch {
	case scanErr != nil:
		// The verdict is computed from the earlier scan (or says ScanFailed when none succeeded); the
		// scan is retried with backoff.
		o = outcome{kind: outcomeFailed, reason: scanFailedReason, message: "scanning: " + truncate(scanErr.Error(), 512) + "; " + summary}
	case len(policies) == 0:
		o = pending(v1alpha1.PendingReason, "%s", summary)
	default:
		o = ready(v1alpha1.SucceededReason, "%s", summary)
	}
	for _, f := range []func(){after, immutabilityEvent} {
		if f != nil {
			o.afterWrite = append(o.afterWrite, f)
		}
	}
	return o, reg, scanErr
}

// getRegistry reads the named Registry into reg; a missing one stalls (a watch re-queues when it
// appears).
func getRegistry(ctx context.Context, c client.Reader, ns, name string, reg *v1alpha1.Registry) (outcome, bool, error) {
	if o, ok, err := checkRegistryRef(ctx, c, ns, name); !ok || err != nil {
		return o, ok, err
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, reg); err != nil {
		return failed(v1alpha1.ReadFailedReason, err), false, client.IgnoreNotFound(err)
	}
	return outcome{}, true, nil
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

// SetupWithManager registers the controller: ImageAttestations on spec or annotation change, the creation or
// deletion of their Registry, and changes to the policies of that Registry (all its images are
// verified again). At most Options.ScanConcurrency images are processed at once.
func (r *ImageAttestationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		return fmt.Errorf("ImageAttestationReconciler needs an APIReader")
	}
	if r.access == nil {
		r.access = &registryAccess{apiReader: r.APIReader, options: r.Options}
	}
	if r.records.cache == nil {
		r.records.cache = lru.New(maxScanRecords)
	}
	r.scanSlots = make(chan struct{}, max(1, r.Options.ScanConcurrency))
	r.fair = newFairShare()
	newList := func() client.ObjectList { return &v1alpha1.ImageAttestationList{} }
	byRegistry := enqueueReferrers(r.Client, newList, indexRegistryRef)
	byPolicy := func(ctx context.Context, p *v1alpha1.RepositoryPolicy) []ctrl.Request {
		reg := &v1alpha1.Registry{}
		reg.Name, reg.Namespace = p.Spec.RegistryRef.Name, p.Namespace
		return byRegistry(ctx, reg)
	}
	// A key Secret or trusted-root ConfigMap that changes re-verifies the images of the policies
	// that read it (the material hash is part of the verifier and result keys).
	byMaterial := func(index string) handler.MapFunc {
		return func(ctx context.Context, o client.Object) []ctrl.Request {
			pols := &v1alpha1.RepositoryPolicyList{}
			if err := r.List(ctx, pols, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
				return nil
			}
			var reqs []ctrl.Request
			for i := range pols.Items {
				reqs = append(reqs, byPolicy(ctx, &pols.Items[i])...)
			}
			return reqs
		}
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if r.lookAgain != nil {
		// The push receiver's look-again requests (Harbor scan events), queued as changes.
		b = b.WatchesRawSource(source.Channel(r.lookAgain, handler.TypedEventHandler[client.Object, ctrl.Request](r.fair.handler())))
	}
	return b.
		// Annotations too: a tag-move acknowledgement (v1alpha1.MovesAcknowledgedAnnotation).
		// New and changed digests are queued at their fair share (fairShare); re-checks last.
		Named("imageattestation").
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&v1alpha1.ImageAttestation{}), handler.TypedEventHandler[client.Object, ctrl.Request](r.fair.handler()),
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(byRegistry), builder.WithPredicates(createOrDelete())).
		Watches(&v1alpha1.RepositoryPolicy{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []ctrl.Request {
			return byPolicy(ctx, o.(*v1alpha1.RepositoryPolicy))
		}), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(byMaterial(indexSecretRefs))).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(byMaterial(indexConfigMapRefs))).
		// A panic inside a library (cosign, later trivy) becomes an error for this object, never a crash.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.Options.ScanConcurrency, r.Options.VerdictConcurrency), RecoverPanic: ptrTo(true)}).
		Complete(r)
}
