package controller

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// ReconcileRequestAnnotation, set to any new value (e.g. a timestamp) on a Registry, asks for an
// immediate pass outside the interval: `kubectl annotate registry NAME
// registry.portcullis.dev/reconcile-request="$(date +%s)" --overwrite`.
const ReconcileRequestAnnotation = "registry.portcullis.dev/reconcile-request"

// RegistryReconciler reconciles a Registry: it checks that the spec can work (host allowed, http only
// where allowed, credentials and CA Secrets usable) and, in later passes, lists the registry.
type RegistryReconciler struct {
	client.Client
	// APIReader reads Secrets uncached, so the manager never caches every Secret in the cluster.
	APIReader client.Reader
	Options   Options
}

// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=registries,verbs=get;list;watch
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=registries/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs one pass for a Registry and writes its status with at most one patch.
func (r *RegistryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &v1alpha1.Registry{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := obj.DeepCopy()
	defer func() {
		if err := patchStatus(ctx, r.Client, obj, base); err != nil && retErr == nil {
			retErr = fmt.Errorf("patching status: %w", err)
		}
	}()

	o, err := r.reconcile(ctx, obj)
	applyOutcome(obj, o)
	if err != nil || o.kind == outcomeFailed {
		return ctrl.Result{}, err
	}
	if o.kind == outcomeReady {
		return ctrl.Result{RequeueAfter: registryInterval(obj)}, nil
	}
	return ctrl.Result{}, nil
}

// reconcile is the flat list of steps of one pass. A returned error is transient.
func (r *RegistryReconciler) reconcile(ctx context.Context, obj *v1alpha1.Registry) (outcome, error) {
	if obj.Spec.Suspend {
		return outcome{kind: outcomeSuspended, reason: v1alpha1.SuspendedReason, message: "spec.suspend is true: the registry is not listed"}, nil
	}
	if o, ok := r.checkEndpoint(obj); !ok {
		return o, nil
	}
	if o, ok, err := r.checkCredentials(ctx, obj); !ok || err != nil {
		return o, err
	}
	if o, ok, err := r.checkCA(ctx, obj); !ok || err != nil {
		return o, err
	}
	return ready(v1alpha1.SucceededReason, "Registry configuration is valid"), nil
}

// checkEndpoint applies the manager's host allowlist and plain-http rules to spec.url.
func (r *RegistryReconciler) checkEndpoint(obj *v1alpha1.Registry) (outcome, bool) {
	u, err := url.Parse(obj.Spec.URL)
	if err != nil || u.Host == "" {
		return stalled(v1alpha1.InvalidSpecReason, "spec.url %q is not an absolute URL", obj.Spec.URL), false
	}
	if !r.Options.hostAllowed(u) {
		return stalled(v1alpha1.HostNotAllowedReason, "host %q is not in the manager's allowed registry hosts", u.Host), false
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) && !r.Options.AllowInsecureRegistries {
		return stalled(v1alpha1.InsecureNotAllowedReason,
			"plain http to %q is allowed only for loopback hosts unless the manager runs with --allow-insecure-registries", u.Host), false
	}
	return outcome{}, true
}

// checkCredentials checks that spec.secretRef names a Secret of a supported type with its keys.
// The Secret's values are never logged or echoed.
func (r *RegistryReconciler) checkCredentials(ctx context.Context, obj *v1alpha1.Registry) (outcome, bool, error) {
	if obj.Spec.SecretRef == nil {
		return outcome{}, true, nil
	}
	s, o, ok, err := getSecret(ctx, r.APIReader, obj.Namespace, obj.Spec.SecretRef.Name)
	if !ok || err != nil {
		return o, ok, err
	}
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil || len(cfg.Auths) == 0 {
			return stalled(v1alpha1.SecretInvalidReason, "Secret %q: %s is not a docker config with auths", s.Name, corev1.DockerConfigJsonKey), false, nil
		}
	case corev1.SecretTypeBasicAuth:
		if len(s.Data[corev1.BasicAuthUsernameKey]) == 0 || len(s.Data[corev1.BasicAuthPasswordKey]) == 0 {
			return stalled(v1alpha1.SecretInvalidReason, "Secret %q needs non-empty %s and %s", s.Name, corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey), false, nil
		}
	default:
		return stalled(v1alpha1.SecretInvalidReason, "Secret %q has type %q; want %s or %s",
			s.Name, s.Type, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeBasicAuth), false, nil
	}
	return outcome{}, true, nil
}

// checkCA checks that spec.certSecretRef names a Secret whose ca.crt holds PEM certificates.
func (r *RegistryReconciler) checkCA(ctx context.Context, obj *v1alpha1.Registry) (outcome, bool, error) {
	if obj.Spec.CertSecretRef == nil {
		return outcome{}, true, nil
	}
	s, o, ok, err := getSecret(ctx, r.APIReader, obj.Namespace, obj.Spec.CertSecretRef.Name)
	if !ok || err != nil {
		return o, ok, err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(s.Data["ca.crt"]) {
		return stalled(v1alpha1.SecretInvalidReason, "Secret %q: ca.crt holds no PEM certificate", s.Name), false, nil
	}
	return outcome{}, true, nil
}

// getSecret reads a Secret (uncached, through the APIReader). A missing Secret stalls (a watch
// re-queues when it appears); any other error is transient.
func getSecret(ctx context.Context, c client.Reader, ns, name string) (*corev1.Secret, outcome, bool, error) {
	s := &corev1.Secret{}
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s)
	switch {
	case apierrors.IsNotFound(err):
		return nil, stalled(v1alpha1.SecretNotFoundReason, "Secret %q not found in namespace %q", name, ns), false, nil
	case err != nil:
		return nil, failed(v1alpha1.ReadFailedReason, fmt.Errorf("reading Secret %q: %w", name, err)), false, err
	}
	return s, outcome{}, true, nil
}

// registryInterval is spec.interval with the API default applied.
func registryInterval(obj *v1alpha1.Registry) time.Duration {
	if obj.Spec.Interval != nil && obj.Spec.Interval.Duration > 0 {
		return obj.Spec.Interval.Duration
	}
	return 10 * time.Minute
}

// SetupWithManager registers the controller: Registries on spec change or a reconcile-request
// annotation, and the Secrets they reference (metadata only: Secret data is never cached).
func (r *RegistryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		return fmt.Errorf("RegistryReconciler needs an APIReader")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Registry{}, indexSecretRefs, registrySecretNames); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Registry{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(
			enqueueReferrers(r.Client, func() client.ObjectList { return &v1alpha1.RegistryList{} }, indexSecretRefs))).
		Named("registry").
		Complete(r)
}
