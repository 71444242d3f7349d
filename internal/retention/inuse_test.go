package retention

import (
	"strings"
	"testing"

	"github.com/portcullis-dev/portcullis/internal/policy"
)

// TestPodImagesInUse: the reference forms Pods carry, and how they protect a repository's digests:
// by digest under any name (spec image, docker's and containerd's imageIDs), and by tag for the same
// repository path on any host (an in-cluster Service name, a port, docker.io's library/ prefix).
func TestPodImagesInUse(t *testing.T) {
	d := func(c string) string { return "sha256:" + repeat(c) }
	p := NewPodImages()
	for _, ref := range []string{
		"registry.example.com/team/api@" + d("a"),        // spec, by digest
		"docker-pullable://mirror.local/other@" + d("b"), // docker imageID: another repository, same digest
		d("c"),                                   // containerd imageID
		"registry.registry.svc:5000/team/api:v2", // by tag, another host name with a port
		"nginx:1.27",                             // docker.io/library/nginx
		"",                                       // a container not started yet
		"not a reference",                        // ignored
	} {
		p.Add(ref)
	}
	listing := []policy.RetentionImage{
		{Digest: d("a"), Tags: []string{"v1"}},
		{Digest: d("b"), Tags: []string{"old"}},
		{Digest: d("c")},
		{Digest: d("e"), Tags: []string{"v2"}},
		{Digest: d("f"), Tags: []string{"v3"}},
	}
	got := p.InUse("team/api", listing)
	for _, c := range []string{"a", "b", "c", "e"} {
		if !got[d(c)] {
			t.Errorf("digest %s must be in use: %v", c, got)
		}
	}
	if got[d("f")] {
		t.Error("v3 is used by no Pod")
	}
	if len(p.InUse("library/nginx", []policy.RetentionImage{{Digest: d("9"), Tags: []string{"1.27"}}})) != 1 {
		t.Error("nginx:1.27 must protect library/nginx:1.27")
	}
	if len(p.InUse("other/api", []policy.RetentionImage{{Digest: d("8"), Tags: []string{"v2"}}})) != 0 {
		t.Error("a tag protects only its own repository path")
	}
}

func repeat(c string) string { return strings.Repeat(c, 64) }
