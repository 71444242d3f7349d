// Package admission is Portcullis's enforcement point: a validating admission webhook that admits a
// workload only when every image it runs passed the RepositoryPolicies in Enforce mode that govern it.
//
// The decision is a lookup, not a re-verification: the image reference is resolved to (Registry,
// repository, digest) from the inventory the controllers keep (ImageAttestations and their
// verdicts, read from the manager's cache through field indexes), so a known image costs no registry
// and no API-server request. Only a tag the inventory does not know yet costs one manifest HEAD under
// a short deadline. Decide and Summarize are pure and table-tested; Handler is the thin edge that
// decodes the request and reports. The webhook validates only, never mutates (no tag-to-digest
// rewriting, which GitOps tools would undo).
package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Path is the URL path the webhook is served at (config/webhook/manifests.yaml).
const Path = "/validate-images"

// Options configure the webhook.
type Options struct {
	Settings
	// Resolve resolves a tag the inventory does not know (nil: such a tag is not resolved).
	Resolve Resolver
	// ResolveTimeout bounds Resolve (default DefaultResolveTimeout).
	ResolveTimeout time.Duration
	// Exempt namespaces are never judged; kube-system always is exempt.
	Exempt []string
	// Evaluate evaluates an image on demand for policies with spec.admission.waitForVerdict (nil:
	// the webhook never waits).
	Evaluate Evaluator
}

// Setup registers the webhook on mgr's webhook server at Path, its field indexes, and a readiness
// check ("admission") that passes once the webhook server serves and the cache has synced, so the
// Service routes admission requests only to a manager that can answer them.
func Setup(mgr ctrl.Manager, o Options) error {
	if err := IndexFields(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	h := &Handler{
		Inventory: &Inventory{Reader: mgr.GetCache(), Resolve: o.Resolve, ResolveTimeout: o.ResolveTimeout},
		Settings:  o.Settings,
		Decoder:   admission.NewDecoder(mgr.GetScheme()),
		Recorder:  mgr.GetEventRecorder("portcullis-admission"),
		Authorize: SubjectAccessReviewer(mgr.GetClient()),
		Exempt:    append([]string{"kube-system"}, o.Exempt...),
		Evaluate:  o.Evaluate,
		OptedIn:   NamespaceOptIn(mgr.GetCache(), mgr.GetAPIReader()),
	}
	// Start the Namespace informer (metadata only: names and labels) with the manager, so the first
	// admission request does not wait for it and readiness covers it.
	if _, err := mgr.GetCache().GetInformer(context.Background(), namespaceMetadata()); err != nil {
		return err
	}
	srv := mgr.GetWebhookServer()
	srv.Register(Path, &webhook.Admission{Handler: h})
	started := srv.StartedChecker()
	return mgr.AddReadyzCheck("admission", func(req *http.Request) error {
		if err := started(req); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("the cache has not synced yet")
		}
		return nil
	})
}

// The webhook reads Namespaces' labels (metadata only; list and watch for the cache, get for a
// namespace the cache does not hold yet).
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// NamespaceOptIn reports whether a namespace is labelled NamespaceLabel=NamespaceEnabled, from the
// metadata-only Namespace informer of cache; a namespace the cache does not hold yet (created a moment
// ago) is read once from api.
func NamespaceOptIn(cache, api client.Reader) func(ctx context.Context, namespace string) (bool, error) {
	return func(ctx context.Context, namespace string) (bool, error) {
		ns := namespaceMetadata()
		err := cache.Get(ctx, client.ObjectKey{Name: namespace}, ns)
		if apierrors.IsNotFound(err) {
			err = api.Get(ctx, client.ObjectKey{Name: namespace}, ns)
		}
		if err != nil {
			return false, fmt.Errorf("reading namespace %s: %w", namespace, err)
		}
		return ns.GetLabels()[NamespaceLabel] == NamespaceEnabled, nil
	}
}

func namespaceMetadata() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// SubjectAccessReviewer checks the break-glass verb with a SubjectAccessReview (the manager's
// ClusterRole may create them, as the metrics endpoint's authorization does).
func SubjectAccessReviewer(c client.Client) Authorizer {
	return func(ctx context.Context, user authenticationv1.UserInfo, namespace string) (bool, error) {
		extra := map[string]authorizationv1.ExtraValue{}
		for k, v := range user.Extra {
			extra[k] = authorizationv1.ExtraValue(v)
		}
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, Groups: user.Groups, UID: user.UID, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: BreakGlassVerb,
				Group: v1alpha1.GroupVersion.Group, Resource: "repositorypolicies"},
		}}
		if err := c.Create(ctx, sar); err != nil {
			return false, fmt.Errorf("SubjectAccessReview: %w", err)
		}
		return sar.Status.Allowed, nil
	}
}
