package receiver

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// Payloads as the registries send them: Distribution's envelope (docs "Notifications"), Harbor's
// Default and CloudEvents formats (src/pkg/notifier/formats), and the generic payload.
func TestParse(t *testing.T) {
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	const harborData = `{"resources":[{"digest":"` + dA + `","tag":"v1","resource_url":"harbor.dev/library/busybox:v1"},
		{"digest":"` + dB + `","tag":"` + dB + `","resource_url":"harbor.dev/library/busybox@` + dB + `"}],
		"repository":{"date_created":1677053165,"name":"busybox","namespace":"library","repo_full_name":"library/busybox","repo_type":"public"}}`
	for _, c := range []struct {
		name   string
		h      http.Header
		body   string
		format Format
		want   []Event
		err    string
	}{
		{name: "Distribution: a manifest push, a layer push, a pull and a delete",
			h: hdr("Content-Type", "application/vnd.docker.distribution.events.v1+json"),
			body: `{"events":[
			 {"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + dA + `","repository":"shop/api","tag":"v1","url":"http://r/v2/shop/api/manifests/` + dA + `"}},
			 {"id":"2","action":"push","target":{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + dB + `","repository":"shop/api"}},
			 {"id":"3","action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + dA + `","repository":"shop/api"}},
			 {"id":"4","action":"delete","target":{"digest":"` + dB + `","repository":"shop/api"}}]}`,
			format: FormatDistribution,
			want:   []Event{{Push, "shop/api", "v1", dA}, {Delete, "shop/api", "", dB}}},
		{name: "Distribution envelope recognised by its shape", h: hdr("Content-Type", "application/json"),
			body:   `{"events":[{"action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","digest":"` + dA + `","repository":"a"}}]}`,
			format: FormatDistribution, want: []Event{{Push, "a", "", dA}}},
		{name: "Harbor Default: a push by tag and by digest", h: hdr("Content-Type", "application/json"),
			body:   `{"type":"PUSH_ARTIFACT","occur_at":1678082303,"operator":"admin","event_data":` + harborData + `}`,
			format: FormatHarbor, want: []Event{{Push, "library/busybox", "v1", dA}, {Push, "library/busybox", "", dB}}},
		{name: "Harbor Default: a delete", h: hdr("Content-Type", "application/json"),
			body:   `{"type":"DELETE_ARTIFACT","occur_at":1,"event_data":` + harborData + `}`,
			format: FormatHarbor, want: []Event{{Delete, "library/busybox", "v1", dA}, {Delete, "library/busybox", "", dB}}},
		{name: "Harbor Default: a scan is only a look again", h: hdr(),
			body:   `{"type":"SCANNING_COMPLETED","occur_at":1,"event_data":` + harborData + `}`,
			format: FormatHarbor, want: []Event{{LookAgain, "library/busybox", "v1", dA}, {LookAgain, "library/busybox", "", dB}}},
		{name: "Harbor Default: a pull says nothing", h: hdr(), body: `{"type":"PULL_ARTIFACT","occur_at":1,"event_data":` + harborData + `}`,
			format: FormatHarbor},
		{name: "Harbor CloudEvents, structured", h: hdr("Content-Type", "application/cloudevents+json"),
			body: `{"specversion":"1.0","id":"4b2f","source":"/projects/1/webhook/policies/3","type":"harbor.artifact.pushed",
			 "datacontenttype":"application/json","time":"2023-03-06T06:08:43Z","data":` + harborData + `,"operator":"admin"}`,
			format: FormatCloudEvents, want: []Event{{Push, "library/busybox", "v1", dA}, {Push, "library/busybox", "", dB}}},
		{name: "Harbor CloudEvents, binary", h: hdr("Content-Type", "application/json", "Ce-Type", "harbor.artifact.deleted", "Ce-Specversion", "1.0"),
			body: harborData, format: FormatCloudEvents, want: []Event{{Delete, "library/busybox", "v1", dA}, {Delete, "library/busybox", "", dB}}},
		{name: "generic", h: hdr("Content-Type", "application/json"), body: `{"repository":"team-a/api","tag":"v2"}`,
			format: FormatGeneric, want: []Event{{Push, "team-a/api", "v2", ""}}},
		{name: "generic delete", h: hdr(), body: `{"action":"delete","repository":"team-a/api","digest":"` + dA + `"}`,
			format: FormatGeneric, want: []Event{{Delete, "team-a/api", "", dA}}},
		{name: "not JSON", h: hdr(), body: `{"events":[`, err: "invalid JSON"},
		{name: "an unknown shape", h: hdr(), body: `{"hello":"world"}`, err: "not a Distribution envelope"},
		{name: "a repository name with a path trick", h: hdr(), body: `{"repository":"../etc","tag":"v1"}`, err: "not a repository name"},
		{name: "a bad digest", h: hdr(), body: `{"repository":"a","digest":"md5:abc"}`, err: "not a sha256 digest"},
		{name: "neither tag nor digest", h: hdr(), body: `{"repository":"a"}`, err: "neither a tag nor a digest"},
		{name: "an unknown generic action", h: hdr(), body: `{"repository":"a","tag":"v1","action":"explode"}`, err: `action "explode"`},
		{name: "a wrong type", h: hdr("Content-Type", "application/vnd.docker.distribution.events.v1+json"), body: `{"events":{"a":1}}`, err: "wrong type"},
	} {
		format, got, err := Parse(c.h, []byte(c.body))
		switch {
		case c.err != "":
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v; want ErrMalformed with %q", c.name, err, c.err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case format != c.format || !slices.Equal(got, c.want):
			t.Errorf("%s: %s %+v; want %s %+v", c.name, format, got, c.format, c.want)
		}
	}
}

func TestPath(t *testing.T) {
	a, b := Path("uid-a"), Path("uid-b")
	if a == b || !strings.HasPrefix(a, PathPrefix) || len(a) != len(PathPrefix)+32 || a != Path("uid-a") {
		t.Errorf("paths %q, %q", a, b)
	}
}
