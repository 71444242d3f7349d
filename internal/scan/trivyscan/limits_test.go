package trivyscan

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

// countingRegistry is go-containerregistry's registry counting blob downloads by digest.
type countingRegistry struct {
	*httptest.Server
	host  string
	mu    sync.Mutex
	blobs map[string]int
}

func newCountingRegistry(t testing.TB) *countingRegistry {
	r := &countingRegistry{blobs: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.mu.Lock()
			r.blobs[req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]]++
			r.mu.Unlock()
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.host = strings.TrimPrefix(r.URL, "http://")
	return r
}

func (r *countingRegistry) downloads(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobs[digest]
}

func buildDB(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", "..", vulndb.ShippedOSV), out); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(out, "db")
}

// TestLayerCache: a rescan after the DB was rebuilt downloads no layer: the analysis is cached by
// layer digest and only re-matched against the new DB (the size limit was checked by the first scan).
func TestLayerCache(t *testing.T) {
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.host+"/app:v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()
	target := reg.host + "/app@" + d.String()
	cacheDir := t.TempDir()

	scanOnce := func(dbDir string, sizeChecked bool) scan.Result {
		tr, err := NewTrivy(dbDir, cacheDir, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		res, err := tr.Scan(context.Background(), target, scan.Access{Insecure: true, SizeChecked: sizeChecked})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := scanOnce(buildDB(t), false)
	downloads := reg.downloads(layerDigest.String())
	if downloads == 0 {
		t.Fatal("the first scan downloaded no layer")
	}
	second := scanOnce(buildDB(t), true) // a rebuilt DB, the same layer cache
	if n := reg.downloads(layerDigest.String()); n != downloads {
		t.Fatalf("a scan with a new DB downloaded the layer again (%d downloads in all)", n)
	}
	if len(second.Vulnerabilities) != len(first.Vulnerabilities) || len(first.Vulnerabilities) == 0 {
		t.Fatalf("re-matching from the cache gave %d findings, the first scan %d", len(second.Vulnerabilities), len(first.Vulnerabilities))
	}
	// A new image in another repository that shares the layer (a common base): its first scan
	// (nothing size-checked yet) downloads only what is new, never the cached layer.
	other, err := mutate.AppendLayers(img, scantest.Layer(t, map[string][]byte{"etc/app.conf": []byte("x=1\n")}))
	if err != nil {
		t.Fatal(err)
	}
	otherTarget := reg.push(t, "other/app", other)
	tr, err := NewTrivy(buildDB(t), cacheDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	third, err := tr.Scan(context.Background(), otherTarget, scan.Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.downloads(layerDigest.String()); n != downloads {
		t.Fatalf("a new image sharing a cached layer downloaded it again (%d downloads in all)", n)
	}
	if len(third.Vulnerabilities) != len(first.Vulnerabilities) {
		t.Fatalf("the shared layer's findings: %d, want %d", len(third.Vulnerabilities), len(first.Vulnerabilities))
	}
}

// TestCompressedSizeLimit: an image whose manifest says it is larger, compressed, than the limit is
// refused before any layer is downloaded.
func TestCompressedSizeLimit(t *testing.T) {
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"noise": randomBytes(t, 64<<10)}))
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "big", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	_, err = openTrivy(t, buildDB(t), 16<<10).Scan(context.Background(), target, scan.Access{Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "compressed image size") {
		t.Fatalf("want the compressed size to refuse the image, got %v", err)
	}
	if n := reg.downloads(ld.String()); n != 0 {
		t.Fatalf("%d layer downloads for a refused image, want 0", n)
	}
}

// TestMaxImageSize: a layer that decompresses far beyond the limit (32 MiB of zeros, a few KiB
// compressed) is refused with a reason instead of being unpacked.
func TestMaxImageSize(t *testing.T) {
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"bomb": make([]byte, 32<<20)}))
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "bomb", img)
	_, err = openTrivy(t, buildDB(t), 8<<20).Scan(context.Background(), target, scan.Access{Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "exceeds maximum allowed size") {
		t.Fatalf("want the size limit to refuse the image, got %v", err)
	}
}

// TestEscapingTarEntriesAreSkipped: a layer entry whose path leaves the root ("../../etc/...") is not
// part of the image and is not analysed (its planted key is not reported), while the same file inside
// the root is.
func TestEscapingTarEntriesAreSkipped(t *testing.T) {
	reg := newCountingRegistry(t)
	key := []byte("AWS_ACCESS_KEY_ID=AKIA" + "QWERTYUIOPASDFGH\n")
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{
		"../../etc/escaped.env": key,
		"app/inside.env":        key,
	}))
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "escape", img)
	tr := openTrivy(t, buildDB(t), 0)
	res, err := tr.Scan(context.Background(), target, scan.Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var inside, escaped bool
	for _, s := range res.Secrets {
		inside = inside || strings.Contains(s.Path, "inside.env")
		escaped = escaped || strings.Contains(s.Path, "escaped.env")
	}
	if !inside || escaped {
		t.Fatalf("want only the key inside the root reported, got %+v", res.Secrets)
	}
	if res.EscapingEntries != 1 {
		t.Fatalf("EscapingEntries = %d, want 1", res.EscapingEntries)
	}
	again, err := tr.Scan(context.Background(), target, scan.Access{Insecure: true, SizeChecked: true})
	if err != nil || again.EscapingEntries != -1 {
		t.Fatalf("a rescan from the analysis cache reads no layer: EscapingEntries %d, %v", again.EscapingEntries, err)
	}
}

// TestLayerCacheTenants: a layer's analysis is reused within a tenant only. Tenant a's second
// scan downloads nothing; tenant b's scan of an image naming the same layer downloads the layer
// (from b's registry) and analyses it itself, with the same findings.
func TestLayerCacheTenants(t *testing.T) {
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()
	target := reg.push(t, "team-a/app", img)
	tr, err := NewTrivy(buildDB(t), t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	scanAs := func(tenant, target string) scan.Result {
		res, err := tr.Scan(context.Background(), target, scan.Access{Insecure: true, Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := scanAs("team-a", target)
	downloads := reg.downloads(layerDigest.String())
	if downloads == 0 || len(first.Vulnerabilities) == 0 {
		t.Fatalf("first scan: %d layer downloads, %d findings", downloads, len(first.Vulnerabilities))
	}
	scanAs("team-a", target)
	if n := reg.downloads(layerDigest.String()); n != downloads {
		t.Fatalf("the same tenant downloaded the cached layer again (%d downloads, want %d)", n, downloads)
	}
	other := scanAs("team-b", reg.push(t, "team-b/app", img))
	if n := reg.downloads(layerDigest.String()); n <= downloads {
		t.Fatalf("another tenant was answered from team-a's analysis: %d layer downloads, want more than %d", n, downloads)
	}
	if len(other.Vulnerabilities) != len(first.Vulnerabilities) {
		t.Fatalf("team-b's own analysis found %d, team-a's %d", len(other.Vulnerabilities), len(first.Vulnerabilities))
	}
}
