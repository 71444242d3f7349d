package admission

import (
	"fmt"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// workload is an admitted object with the pod template it runs.
type workload struct {
	obj  client.Object
	meta *metav1.ObjectMeta // the pod template's (a Pod's own for a Pod)
	spec *corev1.PodSpec
}

// newWorkload returns an empty object of the kinds the webhook judges, nil for any other kind.
func newWorkload(gk metav1.GroupVersionKind) client.Object {
	switch gk.Group + "/" + gk.Kind {
	case "/Pod":
		return &corev1.Pod{}
	case "apps/Deployment":
		return &appsv1.Deployment{}
	case "apps/ReplicaSet":
		return &appsv1.ReplicaSet{}
	case "apps/StatefulSet":
		return &appsv1.StatefulSet{}
	case "apps/DaemonSet":
		return &appsv1.DaemonSet{}
	case "batch/Job":
		return &batchv1.Job{}
	case "batch/CronJob":
		return &batchv1.CronJob{}
	}
	return nil
}

// decodeWorkload decodes raw into a workload of req's kind; nil, nil for a kind the webhook does not
// judge.
func decodeWorkload(dec admission.Decoder, gk metav1.GroupVersionKind, raw runtime.RawExtension) (*workload, error) {
	obj := newWorkload(gk)
	if obj == nil || len(raw.Raw) == 0 {
		return nil, nil
	}
	if err := dec.DecodeRaw(raw, obj); err != nil {
		return nil, fmt.Errorf("decoding the %s: %w", gk.Kind, err)
	}
	w := &workload{obj: obj}
	switch o := obj.(type) {
	case *corev1.Pod:
		w.meta, w.spec = &o.ObjectMeta, &o.Spec
	case *appsv1.Deployment:
		w.meta, w.spec = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *appsv1.ReplicaSet:
		w.meta, w.spec = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *appsv1.StatefulSet:
		w.meta, w.spec = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *appsv1.DaemonSet:
		w.meta, w.spec = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *batchv1.Job:
		w.meta, w.spec = &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *batchv1.CronJob:
		w.meta, w.spec = &o.Spec.JobTemplate.Spec.Template.ObjectMeta, &o.Spec.JobTemplate.Spec.Template.Spec
	}
	return w, nil
}

// images lists the pod spec's image references, each once, in order: init containers, containers,
// ephemeral containers.
func (w *workload) images() []string {
	var out []string
	add := func(img string) {
		if img != "" && !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	for _, c := range w.spec.InitContainers {
		add(c.Image)
	}
	for _, c := range w.spec.Containers {
		add(c.Image)
	}
	for _, c := range w.spec.EphemeralContainers {
		add(c.Image)
	}
	return out
}

// annotation is a workload annotation: on the object itself or on its pod template.
func (w *workload) annotation(key string) string {
	if v := w.obj.GetAnnotations()[key]; v != "" {
		return v
	}
	return w.meta.Annotations[key]
}

// newImages are the images of w that old (the object before an UPDATE) did not run: an update that
// keeps every image (a label, a replica count, a rollout restart) is not judged again.
func newImages(w, old *workload, op admissionv1.Operation) []string {
	imgs := w.images()
	if op != admissionv1.Update || old == nil {
		return imgs
	}
	before := old.images()
	return slices.DeleteFunc(imgs, func(i string) bool { return slices.Contains(before, i) })
}

// controlledByWorkload reports whether a Pod has a controller of a kind the webhook judges (its
// template was judged when the controller's object was applied).
func controlledByWorkload(obj client.Object) bool {
	ref := metav1.GetControllerOf(obj)
	if ref == nil {
		return false
	}
	switch ref.Kind {
	case "ReplicaSet", "StatefulSet", "DaemonSet", "Job":
		return true
	}
	return false
}
