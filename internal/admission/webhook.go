package admission

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

const (
	// NamespaceLabel opts a namespace in: the shipped ValidatingWebhookConfiguration matches only
	// namespaces labelled `registry.portcullis.dev/admission: enabled` (as policy-controller and
	// Kyverno opt namespaces in), never kube-system or the manager's own.
	NamespaceLabel = "registry.portcullis.dev/admission"
	// NamespaceEnabled is NamespaceLabel's value that opts a namespace in.
	NamespaceEnabled = "enabled"
	// BreakGlassAnnotation on a workload or its pod template (any non-empty value: the reason)
	// admits its images whatever their verdicts, when the user who applies it may `break-glass`
	// repositorypolicies.registry.portcullis.dev in the namespace (an RBAC verb the cluster admin
	// grants). Every use is recorded as a Warning event on the workload. A Pod whose controller is
	// a ReplicaSet, StatefulSet, DaemonSet or Job carries its template's annotation, which was
	// authorized when that controller's object was applied.
	BreakGlassAnnotation = "registry.portcullis.dev/break-glass"
	// BreakGlassVerb is the RBAC verb BreakGlassAnnotation needs.
	BreakGlassVerb = "break-glass"
)

// Authorizer reports whether user may break glass in namespace (a SubjectAccessReview).
type Authorizer func(ctx context.Context, user authenticationv1.UserInfo, namespace string) (bool, error)

// Handler is the validating webhook for Pods and the pod templates of Deployments, ReplicaSets,
// StatefulSets, DaemonSets, Jobs and CronJobs. It never mutates. The decision for each image is
// Decide's, from Inventory; the handler only decodes, collects and reports.
type Handler struct {
	// Inventory answers what Portcullis knows about an image.
	Inventory *Inventory
	// Settings are the cluster admin's choices.
	Settings Settings
	// Decoder decodes the request's objects.
	Decoder admission.Decoder
	// Recorder records refusals, Audit warnings and break-glass uses on the workload (nil: none).
	// Dry-run requests record nothing.
	Recorder events.EventRecorder
	// Authorize checks the break-glass verb (nil: break-glass is never honoured).
	Authorize Authorizer
	// Exempt namespaces are never judged (the manager's own, kube-system), whatever the webhook
	// configuration says.
	Exempt []string
	// Evaluate puts an image into the inventory now (controller.Wiring.Evaluate), for policies with
	// spec.admission.waitForVerdict (nil: the webhook never waits).
	Evaluate Evaluator
	// OptedIn reports whether a namespace carries NamespaceLabel=enabled (nil: trust the webhook
	// configuration's namespaceSelector). The handler checks it itself because a namespaceSelector
	// is not always ours to set: OLM replaces it with the OperatorGroup's.
	OptedIn func(ctx context.Context, namespace string) (bool, error)
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	if slices.Contains(h.Exempt, req.Namespace) {
		return admission.Allowed("namespace exempt from image admission")
	}
	if h.OptedIn != nil {
		in, err := h.OptedIn(ctx, req.Namespace)
		if err != nil { // fail as the webhook configuration's failurePolicy says
			ctrl.LoggerFrom(ctx).Error(err, "reading the namespace's admission label")
			observe(req.Namespace, nil, "error", start)
			return admission.Errored(http.StatusInternalServerError, err)
		}
		if !in {
			return admission.Allowed("namespace not opted in to image admission (" + NamespaceLabel + "=" + NamespaceEnabled + ")")
		}
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	w, err := decodeWorkload(h.Decoder, req.Kind, req.Object)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if w == nil {
		return admission.Allowed("not a workload")
	}
	var old *workload
	if req.Operation == admissionv1.Update {
		if old, err = decodeWorkload(h.Decoder, req.Kind, req.OldObject); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
	}
	images := newImages(w, old, req.Operation)
	if len(images) == 0 {
		return admission.Allowed("no new image")
	}
	items := make([]judged, 0, len(images))
	for _, img := range images {
		ref, err := ParseReference(img)
		if err != nil {
			items = append(items, judged{decision: ImageDecision{Image: img, Outcome: Refuse,
				Findings: []Finding{{Mode: v1alpha1.ModeEnforce, Reasons: []string{ReasonInvalidReference}, Detail: err.Error()}}}})
			continue
		}
		cov, err := h.Inventory.Coverage(ctx, ref)
		if err != nil { // the cache cannot be read: fail closed, the API server retries nothing
			ctrl.LoggerFrom(ctx).Error(err, "admission lookup")
			observe(req.Namespace, nil, "error", start)
			return admission.Errored(http.StatusInternalServerError, err)
		}
		items = append(items, judged{ref: ref, cov: cov, decision: Decide(ref, cov, h.Settings)})
	}
	h.awaitVerdicts(ctx, items)
	decisions := make([]ImageDecision, 0, len(items))
	for _, it := range items {
		decisions = append(decisions, it.decision)
	}
	resp := Summarize(decisions)
	dryRun := req.DryRun != nil && *req.DryRun
	if !resp.Allowed {
		if reason := w.annotation(BreakGlassAnnotation); reason != "" {
			if h.mayBreakGlass(ctx, req, w) {
				h.event(dryRun, w, corev1.EventTypeWarning, "BreakGlass",
					"admitted by break-glass (%s) for %s despite: %s", reason, req.UserInfo.Username, resp.Message)
				observe(req.Namespace, decisions, "break-glass", start)
				return admission.Allowed("break-glass").WithWarnings(append(resp.Warnings,
					truncate("admitted by break-glass despite: "+resp.Message, maxWarning))...)
			}
			resp.Warnings = append(resp.Warnings, "the "+BreakGlassAnnotation+" annotation is ignored: "+req.UserInfo.Username+
				" may not "+BreakGlassVerb+" repositorypolicies.registry.portcullis.dev in "+req.Namespace)
		}
		h.event(dryRun, w, corev1.EventTypeWarning, "ImageRefused", "%s", resp.Message)
		observe(req.Namespace, decisions, "refused", start)
		return admission.Denied(resp.Message).WithWarnings(resp.Warnings...)
	}
	decision := "admitted"
	if len(resp.Warnings) > 0 {
		decision = "warned"
		h.event(dryRun, w, corev1.EventTypeWarning, "ImagePolicyWarning", "%s", truncate(strings.Join(resp.Warnings, "; "), maxMessage))
	}
	observe(req.Namespace, decisions, decision, start)
	return admission.Allowed("").WithWarnings(resp.Warnings...)
}

// mayBreakGlass reports whether the break-glass annotation is honoured for req.
func (h *Handler) mayBreakGlass(ctx context.Context, req admission.Request, w *workload) bool {
	if _, isPod := w.obj.(*corev1.Pod); isPod && controlledByWorkload(w.obj) {
		return true
	}
	if h.Authorize == nil {
		return false
	}
	ok, err := h.Authorize(ctx, req.UserInfo, req.Namespace)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "checking the break-glass verb")
	}
	return ok && err == nil
}

// event records note on the workload: a controlled Pod's controller (a Pod created from a
// template has no name yet), else the object itself.
func (h *Handler) event(dryRun bool, w *workload, kind, reason, note string, args ...any) {
	if h.Recorder == nil || dryRun {
		return
	}
	var regarding runtime.Object = w.obj
	if ref := metav1.GetControllerOf(w.obj); ref != nil {
		regarding = &corev1.ObjectReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID,
			Namespace: w.obj.GetNamespace()}
	}
	h.Recorder.Eventf(regarding, nil, kind, reason, "Admit", note, args...)
}
