package retention

import (
	"context"
	"errors"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portcullis-dev/portcullis/internal/policy"
)

// PodImages is what the cluster's Pods run, ran or are about to run. Digests are content addresses,
// so a digest any Pod names protects that digest in every repository of every registry; tags are
// matched by repository path on any host (a Registry's URL and the names Pods pull by often differ:
// an in-cluster Service, a port, docker.io). Over-protection only keeps more.
type PodImages struct {
	digests map[string]bool
	tags    map[string]map[string]bool // repository path → tags
}

// NewPodImages is an empty PodImages, to fill with Add and AddSpec.
func NewPodImages() *PodImages {
	return &PodImages{digests: map[string]bool{}, tags: map[string]map[string]bool{}}
}

// podPageSize is the page size of the uncached Pod list.
const podPageSize = 500

// ListPodImages reads what the cluster runs or may run again (uncached, page by page): every Pod,
// whatever its phase (a CronJob's finished Pods still name what it runs next), with the images its
// containers, init containers and ephemeral containers ask for, by digest or by tag, and the digests
// the kubelet pulled (status imageID); and the pod templates of every Deployment (scaled to zero
// too), ReplicaSet (those kept for rollback), StatefulSet, DaemonSet, Job and CronJob, so an image a
// rollback, a scale-up or the next scheduled run needs is never deleted for having no Pod now. c
// must be allowed to list those kinds in every namespace; a refused list is returned as the error.
func ListPodImages(ctx context.Context, c client.Reader) (*PodImages, error) {
	p := NewPodImages()
	err := listPages(ctx, c, func() client.ObjectList { return &corev1.PodList{} }, func(l client.ObjectList) {
		for i := range l.(*corev1.PodList).Items {
			pod := &l.(*corev1.PodList).Items[i]
			p.AddSpec(&pod.Spec)
			for _, ss := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
				for _, s := range ss {
					p.Add(s.ImageID)
					p.Add(s.Image)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for _, newList := range workloadLists {
		var extractErr error
		err := listPages(ctx, c, newList, func(l client.ObjectList) {
			items, err := apimeta.ExtractList(l) // pointers into the page's items
			extractErr = errors.Join(extractErr, err)
			for _, it := range items {
				if spec := templateSpec(it); spec != nil {
					p.AddSpec(spec)
				}
			}
		})
		if err = errors.Join(err, extractErr); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// workloadLists are the kinds whose pod templates protectInUse reads.
var workloadLists = []func() client.ObjectList{
	func() client.ObjectList { return &appsv1.DeploymentList{} },
	func() client.ObjectList { return &appsv1.ReplicaSetList{} },
	func() client.ObjectList { return &appsv1.StatefulSetList{} },
	func() client.ObjectList { return &appsv1.DaemonSetList{} },
	func() client.ObjectList { return &batchv1.JobList{} },
	func() client.ObjectList { return &batchv1.CronJobList{} },
}

// templateSpec is the pod spec of a workload's template (nil for another kind).
func templateSpec(o runtime.Object) *corev1.PodSpec {
	switch w := o.(type) {
	case *appsv1.Deployment:
		return &w.Spec.Template.Spec
	case *appsv1.ReplicaSet:
		return &w.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &w.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &w.Spec.Template.Spec
	case *batchv1.Job:
		return &w.Spec.Template.Spec
	case *batchv1.CronJob:
		return &w.Spec.JobTemplate.Spec.Template.Spec
	}
	return nil
}

// listPages lists every object of a kind across namespaces, podPageSize at a time, handing each
// page to fn.
func listPages(ctx context.Context, c client.Reader, newList func() client.ObjectList, fn func(client.ObjectList)) error {
	opts := []client.ListOption{client.Limit(podPageSize)}
	for {
		l := newList()
		if err := c.List(ctx, l, opts...); err != nil {
			return err
		}
		fn(l)
		next := l.GetContinue()
		if next == "" {
			return nil
		}
		opts = []client.ListOption{client.Limit(podPageSize), client.Continue(next)}
	}
}

// AddSpec records the images a pod spec's containers, init containers and ephemeral containers
// ask for.
func (p *PodImages) AddSpec(spec *corev1.PodSpec) {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, ctr := range cs {
			p.Add(ctr.Image)
		}
	}
	for _, ec := range spec.EphemeralContainers {
		p.Add(ec.Image)
	}
}

// Add records an image reference: "host/repo@sha256:...", "host/repo:tag", an imageID such as
// "docker-pullable://host/repo@sha256:...", or containerd's bare "sha256:...".
func (p *PodImages) Add(ref string) {
	ref = strings.TrimPrefix(strings.TrimPrefix(ref, "docker-pullable://"), "docker://")
	if ref == "" {
		return
	}
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		ref = ref[i+1:]
	}
	if strings.HasPrefix(ref, "sha256:") || strings.HasPrefix(ref, "sha512:") {
		p.digests[ref] = true
		return
	}
	if t, err := name.NewTag(ref); err == nil {
		repo := t.Context().RepositoryStr()
		if p.tags[repo] == nil {
			p.tags[repo] = map[string]bool{}
		}
		p.tags[repo][t.TagStr()] = true
	}
}

// InUse returns the digests of the listing that Pods use: named by digest anywhere, or behind a tag
// a Pod names for this repository path.
func (p *PodImages) InUse(repo string, listing []policy.RetentionImage) map[string]bool {
	out := map[string]bool{}
	tags := p.tags[repo]
	for _, img := range listing {
		if p.digests[img.Digest] {
			out[img.Digest] = true
		}
		for _, t := range img.Tags {
			if tags[t] {
				out[img.Digest] = true
			}
		}
	}
	return out
}
