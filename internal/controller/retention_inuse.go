package controller

import (
	"context"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portcullis-dev/portcullis/internal/policy"
)

// podImages is what the cluster's Pods run or are about to run: image references by digest and by
// tag, each as registry host → repository → digests or tags.
type podImages struct {
	digests map[string]map[string]map[string]bool
	tags    map[string]map[string]map[string]bool
}

// podPageSize is the page size of the uncached Pod list.
const podPageSize = 500

// listPodImages reads every Pod that has not finished (uncached, page by page): the images its
// containers ask for (spec, by digest or by tag) and the digests the kubelet pulled (status imageID).
func listPodImages(ctx context.Context, c client.Reader) (*podImages, error) {
	p := &podImages{digests: map[string]map[string]map[string]bool{}, tags: map[string]map[string]map[string]bool{}}
	opts := []client.ListOption{client.Limit(podPageSize)}
	for {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, opts...); err != nil {
			return nil, err
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
				for _, ctr := range cs {
					p.add(ctr.Image)
				}
			}
			for _, ss := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
				for _, s := range ss {
					p.add(s.ImageID)
				}
			}
		}
		if pods.Continue == "" {
			return p, nil
		}
		opts = []client.ListOption{client.Limit(podPageSize), client.Continue(pods.Continue)}
	}
}

// add records an image reference: "host/repo@sha256:...", "host/repo:tag", or an imageID such as
// "docker-pullable://host/repo@sha256:...". References that do not parse are ignored.
func (p *podImages) add(ref string) {
	ref = strings.TrimPrefix(strings.TrimPrefix(ref, "docker-pullable://"), "docker://")
	if ref == "" {
		return
	}
	put := func(m map[string]map[string]map[string]bool, host, repo, v string) {
		if m[host] == nil {
			m[host] = map[string]map[string]bool{}
		}
		if m[host][repo] == nil {
			m[host][repo] = map[string]bool{}
		}
		m[host][repo][v] = true
	}
	if d, err := name.NewDigest(ref); err == nil {
		put(p.digests, d.Context().RegistryStr(), d.Context().RepositoryStr(), d.DigestStr())
		return
	}
	if t, err := name.NewTag(ref); err == nil {
		put(p.tags, t.Context().RegistryStr(), t.Context().RepositoryStr(), t.TagStr())
	}
}

// inUse returns the digests of host/repo that Pods use: by digest, and the digest behind each tag
// they name (as listed), so a Pod that has yet to pull "repo:tag" keeps that tag's digest.
func (p *podImages) inUse(host, repo string, listing []policy.RetentionImage) map[string]bool {
	out := map[string]bool{}
	for d := range p.digests[host][repo] {
		out[d] = true
	}
	if tags := p.tags[host][repo]; len(tags) > 0 {
		for _, img := range listing {
			for _, t := range img.Tags {
				if tags[t] {
					out[img.Digest] = true
				}
			}
		}
	}
	return out
}
