package reports

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Format is one PolicyReport kind the reports are written as.
type Format struct {
	// Name is the format's name in --policy-reports: openreports or wgpolicyk8s.
	Name string
	// APIVersion and Kind of the report object.
	APIVersion, Kind string
}

// The formats: OpenReports Report and wg-policy PolicyReport (the same results schema; the older
// kind has no source and configuration fields).
var (
	OpenReports = Format{Name: "openreports", APIVersion: "openreports.io/v1alpha1", Kind: "Report"}
	WGPolicy    = Format{Name: "wgpolicyk8s", APIVersion: "wgpolicyk8s.io/v1alpha2", Kind: "PolicyReport"}
)

// ParseFormats reads --policy-reports: a comma-separated list of format names (empty: none). An
// unknown name is an error that names the known ones.
func ParseFormats(s string) ([]Format, error) {
	var out []Format
	for _, n := range strings.Split(s, ",") {
		switch strings.TrimSpace(n) {
		case "":
		case OpenReports.Name:
			out = append(out, OpenReports)
		case WGPolicy.Name:
			out = append(out, WGPolicy)
		default:
			return nil, fmt.Errorf("unknown PolicyReport format %q: want openreports, wgpolicyk8s or both, comma-separated", n)
		}
	}
	return out, nil
}

// written counts report writes by format, so "quiet when nothing changed" shows on /metrics.
var written = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_policy_report_writes_total",
	Help: "PolicyReport writes (server-side apply of a changed report), by format: openreports or wgpolicyk8s.",
}, []string{"format"})

func init() { ctrlmetrics.Registry.MustRegister(written) }

// Collectors are the metrics this package serves on the manager's /metrics (the README's table is
// checked against them).
func Collectors() []prometheus.Collector { return []prometheus.Collector{written} }

// FieldOwner is the server-side apply field manager of the reports.
const FieldOwner = "portcullis-reports"

// DefaultMinInterval is the least time between two writes of one Registry's report: a burst of
// verdicts (a first listing, a DB update) is one write.
const DefaultMinInterval = 10 * time.Second

// RBAC: reports are written with server-side apply (patch; create for the first) and never read
// back, so no list or watch of other tools' reports and no cache of them.
// +kubebuilder:rbac:groups=openreports.io,resources=reports,verbs=create;patch
// +kubebuilder:rbac:groups=wgpolicyk8s.io,resources=policyreports,verbs=create;patch

// Reconciler writes one report per Registry and Format from the cache's ImageAttestations and
// RepositoryPolicies, and writes it only when its content differs from what it last wrote (a
// verdict, a tag or a policy's mode changed), at most once per MinInterval per Registry. The report
// is owned by the Registry (garbage-collected with it).
type Reconciler struct {
	Client  client.Client
	Formats []Format
	// MaxResults bounds a report's results (default DefaultMaxResults).
	MaxResults int
	// MinInterval spaces a Registry's writes (default DefaultMinInterval).
	MinInterval time.Duration

	mu      sync.Mutex
	written map[writeKey][32]byte
	last    map[types.NamespacedName]time.Time
	// writes counts report writes (tests).
	writes int
	// missing records the formats whose CRD is not installed, to say so once.
	missing map[string]bool
}

type writeKey struct {
	registry types.NamespacedName
	format   string
}

// Writes is how many report writes the Reconciler has made (tests, benchmarks).
func (r *Reconciler) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// Reconcile writes the Registry's reports when they changed.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	reg := &v1alpha1.Registry{}
	if err := r.Client.Get(ctx, req.NamespacedName, reg); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName) // its reports go with it (owner reference)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if wait := r.wait(req.NamespacedName); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	policies := &v1alpha1.RepositoryPolicyList{}
	if err := r.Client.List(ctx, policies, client.InNamespace(reg.Namespace)); err != nil {
		return reconcile.Result{}, err
	}
	ias := &v1alpha1.ImageAttestationList{}
	// Read-only: no deep copy of a large inventory.
	if err := r.Client.List(ctx, ias, client.InNamespace(reg.Namespace), client.UnsafeDisableDeepCopy,
		client.MatchingLabels{v1alpha1.RegistryLabel: v1alpha1.RegistryLabelValue(reg.Name)}); err != nil {
		return reconcile.Result{}, err
	}
	rep, _ := Build(reg, policies.Items, ias.Items, r.MaxResults)
	var retry time.Duration
	for _, f := range r.Formats {
		obj, sum, err := object(rep, f, reg)
		if err != nil {
			return reconcile.Result{}, err
		}
		k := writeKey{req.NamespacedName, f.Name}
		r.mu.Lock()
		same := r.written[k] == sum
		r.mu.Unlock()
		if same {
			continue
		}
		err = r.Client.Patch(ctx, obj, client.Apply, client.ForceOwnership, client.FieldOwner(FieldOwner)) //nolint:staticcheck // unstructured apply
		if apimeta.IsNoMatchError(err) {
			r.sayMissing(ctx, f)
			retry = 10 * time.Minute
			continue
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("writing %s %s/%s: %w", f.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		r.mu.Lock()
		r.written[k], r.last[req.NamespacedName] = sum, time.Now()
		r.writes++
		r.mu.Unlock()
		written.WithLabelValues(f.Name).Inc()
	}
	return reconcile.Result{RequeueAfter: retry}, nil
}

// object is rep as format f's unstructured object, owned by reg, and a hash of its content.
func object(rep any, f Format, reg *v1alpha1.Registry) (*unstructured.Unstructured, [32]byte, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(rep)
	if err != nil {
		return nil, [32]byte{}, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(f.APIVersion)
	u.SetKind(f.Kind)
	if f == WGPolicy {
		// wgpolicyk8s.io/v1alpha2 has neither field.
		delete(m, "source")
		delete(m, "configuration")
	}
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels["app.kubernetes.io/managed-by"] = "portcullis"
	labels[v1alpha1.RegistryLabel] = v1alpha1.RegistryLabelValue(reg.Name)
	u.SetLabels(labels)
	u.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Registry", Name: reg.Name, UID: reg.UID}})
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, [32]byte{}, err
	}
	return u, sha256.Sum256(b), nil
}

// wait is how long until the Registry's report may be written again (0: now).
func (r *Reconciler) wait(reg types.NamespacedName) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.last[reg]
	if !ok {
		return 0
	}
	return max(0, r.MinInterval-time.Since(last))
}

func (r *Reconciler) forget(reg types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.last, reg)
	for k := range r.written {
		if k.registry == reg {
			delete(r.written, k)
		}
	}
}

func (r *Reconciler) sayMissing(ctx context.Context, f Format) {
	r.mu.Lock()
	said := r.missing[f.Name]
	r.missing[f.Name] = true
	r.mu.Unlock()
	if !said {
		ctrl.LoggerFrom(ctx).Info("PolicyReports are on but their CRD is not installed; retrying every 10 minutes",
			"format", f.Name, "kind", f.Kind, "apiVersion", f.APIVersion)
	}
}

// SetupWithManager watches Registries, their ImageAttestations (a verdict, tag or finding count
// changed) and RepositoryPolicies (a mode changed), each mapped to the Registry whose report they
// are in.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.MinInterval <= 0 {
		r.MinInterval = DefaultMinInterval
	}
	r.written, r.last, r.missing = map[writeKey][32]byte{}, map[types.NamespacedName]time.Time{}, map[string]bool{}
	toRegistry := func(name func(client.Object) string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name(o)}}}
		})
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Registry{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ImageAttestation{}, toRegistry(func(o client.Object) string { return o.(*v1alpha1.ImageAttestation).Spec.RegistryRef.Name }),
			builder.WithPredicates(verdictChanged())).
		Watches(&v1alpha1.RepositoryPolicy{}, toRegistry(func(o client.Object) string { return o.(*v1alpha1.RepositoryPolicy).Spec.RegistryRef.Name }),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Named("policyreport").
		Complete(r)
}

// verdictChanged passes ImageAttestation creations, deletions and updates that change what a
// report says of it: its tags, its policies' verdicts and reasons, its vulnerability counts, its
// history.
func verdictChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*v1alpha1.ImageAttestation), e.ObjectNew.(*v1alpha1.ImageAttestation)
			return reportFingerprint(o) != reportFingerprint(n)
		},
	}
}

// reportFingerprint is what Build reads of an ImageAttestation.
func reportFingerprint(ia *v1alpha1.ImageAttestation) string {
	var b strings.Builder
	b.WriteString(strings.Join(ia.Spec.Tags, ","))
	for _, p := range ia.Status.Policies {
		fmt.Fprintf(&b, "|%s/%t/%s", p.Name, p.Compliant, strings.Join(p.Reasons, ","))
	}
	if v := ia.Status.Vulnerabilities; v != nil {
		fmt.Fprintf(&b, "|%d/%d/%d/%d/%d", v.Critical, v.High, v.Medium, v.Low, v.Unknown)
	}
	if h := ia.Status.History; len(h) > 0 {
		fmt.Fprintf(&b, "|%d", h[len(h)-1].Time.Unix())
	}
	return b.String()
}
