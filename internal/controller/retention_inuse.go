package controller

import (
	"context"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portcullis-dev/portcullis/internal/policy"
)

// podImages is what the cluster's Pods run, ran or are about to run. Digests are content addresses,
// so a digest any Pod names protects that digest in every repository of every registry; tags are
// matched by repository path on any host (a Registry's URL and the names Pods pull by often differ:
// an in-cluster Service, a port, docker.io). Over-protection only keeps more.
type podImages struct {
	digests map[string]bool
	tags    map[string]map[string]bool // repository path → tags
}

// podPageSize is the page size of the uncached Pod list.
const podPageSize = 500

// listPodImages reads every Pod (uncached, page by page), whatever its phase (a CronJob's finished
// Pods still name what it runs next): the images its containers, init containers and ephemeral
// containers ask for, by digest or by tag, and the digests the kubelet pulled (status imageID).
func listPodImages(ctx context.Context, c client.Reader) (*podImages, error) {
	p := &podImages{digests: map[string]bool{}, tags: map[string]map[string]bool{}}
	opts := []client.ListOption{client.Limit(podPageSize)}
	for {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, opts...); err != nil {
			return nil, err
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
				for _, ctr := range cs {
					p.add(ctr.Image)
				}
			}
			for _, ec := range pod.Spec.EphemeralContainers {
				p.add(ec.Image)
			}
			for _, ss := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
				for _, s := range ss {
					p.add(s.ImageID)
					p.add(s.Image)
				}
			}
		}
		if pods.Continue == "" {
			return p, nil
		}
		opts = []client.ListOption{client.Limit(podPageSize), client.Continue(pods.Continue)}
	}
}

// add records an image reference: "host/repo@sha256:...", "host/repo:tag", an imageID such as
// "docker-pullable://host/repo@sha256:...", or containerd's bare "sha256:...".
func (p *podImages) add(ref string) {
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

// inUse returns the digests of the listing that Pods use: named by digest anywhere, or behind a tag
// a Pod names for this repository path.
func (p *podImages) inUse(repo string, listing []policy.RetentionImage) map[string]bool {
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
