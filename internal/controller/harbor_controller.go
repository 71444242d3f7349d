package controller

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// maxEnforcementChanges bounds status.enforcement.changes (the API's MaxItems).
const maxEnforcementChanges = 50

// maxMessage bounds status.enforcement.message (MaxLength 1024, truncate adds "...").
const maxMessage = 1021

// HarborReconciler writes what a RepositoryPolicy owns to a Harbor registry (provider Harbor):
// project members, robot accounts (their credentials into Secrets), immutable tag rules, and the
// project security switches. Each pass reads the projects, computes the difference, shows it in
// status.enforcement, and in mode Enforce makes exactly that difference; Audit writes nothing. It
// only ever removes what it recorded as created (status.enforcement.owned*, robot descriptions), and
// writes nothing for a policy that another, older policy's projects conflict with, or that Harbor
// cannot express (the RepositoryPolicy controller reports both as Stalled). Passes run on every
// policy change, when a robot Secret changes or disappears, and once per Registry interval, which
// repairs drift (a robot deleted by hand is created again).
type HarborReconciler struct {
	client.Client
	// APIReader lists the policy's robot Secrets uncached.
	APIReader client.Reader
	Recorder  events.EventRecorder
	access    *registryAccess
	now       func() time.Time
}

// Secrets are written only where config/rbac/robot_secret_writer_role.yaml is bound (see
// RobotSecretWriterRole); selfsubjectaccessreviews is granted to every user by system:basic-user.
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies,verbs=get;patch

// harborFinalizer keeps an Enforce policy that wrote to Harbor until what it created there (robots,
// members, immutable tag rules, retention rules) is removed.
const harborFinalizer = "registry.portcullis.dev/harbor-cleanup"

// Reconcile runs one enforcement pass for a RepositoryPolicy. The policy is read uncached: its
// status holds the record of what Portcullis created, which must never be taken from a stale copy,
// and every status write is guarded by its resourceVersion.
func (r *HarborReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pol := &v1alpha1.RepositoryPolicy{}
	// From the cache first: a policy of another kind of registry costs no API request.
	if err := r.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		reg := &v1alpha1.Registry{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil ||
			reg.Spec.Provider != v1alpha1.ProviderHarbor {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if err := r.APIReader.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	deleting := pol.DeletionTimestamp != nil
	if deleting && !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		return ctrl.Result{}, nil
	}
	reg := &v1alpha1.Registry{}
	err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg)
	switch {
	case client.IgnoreNotFound(err) != nil:
		return ctrl.Result{}, err
	case err != nil || reg.Spec.Provider != v1alpha1.ProviderHarbor || (deleting && (reg.Spec.Suspend || pol.Spec.Mode != v1alpha1.ModeEnforce)):
		// No Harbor to reach (the Registry is gone, not Harbor, suspended) or mode Audit, which
		// writes nothing: a deletion goes ahead and leaves Harbor as it is, which is said loudly.
		if deleting && r.ownsAnything(ctx, pol) {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeWarning, "HarborCleanupSkipped", "Delete",
				"deleted without removing what it created in Harbor (robots, members, rules; see status.enforcement): the Registry is gone, suspended or not Harbor, or the policy is in mode Audit")
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	case reg.Spec.Suspend:
		return ctrl.Result{}, nil
	}
	scope := policy.HarborScope{Repositories: map[string][]string{}} // deleting, or nothing to write: clean up only
	switch {
	case deleting:
	case policy.WritesToHarbor(&pol.Spec):
		var ok bool
		if scope, _, ok, err = harborClaim(ctx, r.Client, pol, reg); !ok || err != nil {
			return ctrl.Result{}, err // Stalled by the policy's own controller, which says why
		}
	case !r.ownsAnything(ctx, pol):
		base := pol.DeepCopy()
		pol.Status.Enforcement = nil
		if err := r.patch(ctx, pol, base); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	}
	if pol.Spec.Mode == v1alpha1.ModeEnforce && !deleting && !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		base := pol.DeepCopy()
		controllerutil.AddFinalizer(pol, harborFinalizer)
		if err := r.Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	base := pol.DeepCopy()
	// write records status.enforcement. This controller is its only writer, so on a conflict (the
	// RepositoryPolicy or retention controller wrote other status fields meanwhile) it reads the
	// policy again and writes the same record on top: the record of what was just created in
	// Harbor must not be lost to a race.
	write := func(st *v1alpha1.EnforcementStatus) error {
		enforced := pol.Status.LastEnforcedTime
		for attempt := 0; ; attempt++ {
			pol.Status.Enforcement, pol.Status.LastEnforcedTime = st, enforced
			err := r.patch(ctx, pol, base)
			if err == nil {
				base = pol.DeepCopy()
				return nil
			}
			if !apierrors.IsConflict(err) || attempt == 4 {
				return err
			}
			fresh := &v1alpha1.RepositoryPolicy{}
			if err := r.APIReader.Get(ctx, req.NamespacedName, fresh); err != nil {
				return err
			}
			*pol, base = *fresh, fresh.DeepCopy()
		}
	}
	now := r.now()
	st, next, announce, err := r.pass(ctx, pol, reg, scope, now, write)
	if st != nil {
		if perr := write(st); perr != nil {
			return ctrl.Result{}, perr
		}
		if announce != nil {
			announce()
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if deleting {
		if st == nil || !st.InSync {
			return ctrl.Result{RequeueAfter: time.Minute}, nil // what it created is not all gone yet
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	}
	after := registryInterval(reg)
	if !next.IsZero() && next.Sub(now) < after {
		after = max(next.Sub(now), time.Second)
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

func (r *HarborReconciler) dropFinalizer(ctx context.Context, pol *v1alpha1.RepositoryPolicy) error {
	if !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		return nil
	}
	base := pol.DeepCopy()
	controllerutil.RemoveFinalizer(pol, harborFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})))
}

// registryKey identifies a Harbor for the record of what Portcullis created there: a policy moved
// to another Harbor (registryRef or spec.url changed) starts a new record, so that it never
// removes objects of the same name or ID there.
func registryKey(reg *v1alpha1.Registry) string {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil {
		return reg.Spec.URL
	}
	host := strings.ToLower(u.Hostname())
	if p := u.Port(); p != "" && !(u.Scheme == "https" && p == "443") && !(u.Scheme == "http" && p == "80") {
		host += ":" + p
	}
	return host // the scheme is left out: moving from http to https is the same Harbor
}

// robotSecrets lists the policy's robot Secrets (labelled with a robot, controlled by the policy)
// by name, and the names of the Secrets spec.access.robots names that something else owns.
func (r *HarborReconciler) robotSecrets(ctx context.Context, pol *v1alpha1.RepositoryPolicy) (map[string]*corev1.Secret, map[string]bool, error) {
	list := &corev1.SecretList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(pol.Namespace), client.HasLabels{v1alpha1.RobotLabel}); err != nil {
		return nil, nil, fmt.Errorf("listing robot Secrets: %w", err)
	}
	mine := map[string]*corev1.Secret{}
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], pol) {
			mine[list.Items[i].Name] = &list.Items[i]
		}
	}
	taken := map[string]bool{}
	if a := pol.Spec.Access; a != nil {
		for _, rb := range a.Robots {
			if mine[rb.SecretName] != nil {
				continue
			}
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
			err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: rb.SecretName}, m)
			if err == nil {
				taken[rb.SecretName] = true
			} else if client.IgnoreNotFound(err) != nil {
				return nil, nil, fmt.Errorf("reading Secret %q: %w", rb.SecretName, err)
			}
		}
	}
	return mine, taken, nil
}

// patch writes status.enforcement and lastEnforcedTime, guarded by the resourceVersion read (a
// conflict is retried with a fresh read), and nothing when they did not change.
func (r *HarborReconciler) patch(ctx context.Context, pol, base *v1alpha1.RepositoryPolicy) error {
	if equality.Semantic.DeepEqual(pol.Status.Enforcement, base.Status.Enforcement) &&
		equality.Semantic.DeepEqual(pol.Status.LastEnforcedTime, base.Status.LastEnforcedTime) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})))
}

// SetupWithManager registers the controller: policies on spec change, the other policies of their
// Registry on spec change (a project conflict may resolve), Registry changes, and robot Secrets
// (metadata only) when they change or disappear.
func (r *HarborReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil || r.access == nil {
		return fmt.Errorf("HarborReconciler needs an APIReader and registry access")
	}
	if r.now == nil {
		r.now = time.Now
	}
	newList := func() client.ObjectList { return &v1alpha1.RepositoryPolicyList{} }
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RepositoryPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.RepositoryPolicy{}, handler.EnqueueRequestsFromMapFunc(harborClaimants(r.Client, true)), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.RepositoryPolicy{}, handler.OnlyControllerOwner()),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[v1alpha1.RobotLabel] != "" }))).
		Named("harbor").
		Complete(r)
}
