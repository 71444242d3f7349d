// Package demo builds the demo's images from real software and pushes them to a registry: Go
// programs compiled here against pinned module versions (one with a known-vulnerable dependency),
// Debian packages fetched with `apt-get download` and laid out with a real /var/lib/dpkg/status, an
// image with a planted cloud access key, and a two-platform index. Some are signed, as `cosign sign
// --key --tlog-upload=false` does, with a key made for the run. `make demo` and the e2e suite use it,
// with the policies of config/samples.
package demo

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// Image is one pushed image and the verdict the sample policies must reach for it.
type Image struct {
	// Repository and Tag as pushed; Digest of the manifest (or index).
	Repository, Tag, Digest string
	// Signed says the digest carries a signature by the run's key.
	Signed bool
	// Want maps a sample policy's name to the reasons it must fail with (empty: compliant). A policy
	// absent from the map does not select the image.
	Want map[string][]string
	// About says what the image is, for people.
	About string
}

// Seeded is what Seed pushed and the key it signed with.
type Seeded struct {
	Images []Image
	// PublicKeyPEM verifies the signatures; Signer makes more (a test re-signs with it).
	PublicKeyPEM []byte
	Signer       signature.Signer
	// Skipped explains an image left out (the Debian one when apt-get cannot download).
	Skipped []string
}

// Pinned programs. x/text v0.3.5 has GO-2021-0113 (CVE-2021-38561, fixed in 0.3.7) and
// GO-2022-1059 (CVE-2022-32149, fixed in 0.3.8); v0.39.0 fixes the last one known (GO-2026-5970 / CVE-2026-56852, an infinite loop).
var (
	apiMain = "package main\n\nimport (\n\t\"fmt\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() { fmt.Println(\"api\", language.English) }\n"
	apiV1   = goProgram{name: "api", require: "\tgolang.org/x/text v0.3.5\n", main: apiMain}
	apiV2   = goProgram{name: "api", require: "\tgolang.org/x/text v0.39.0\n", main: apiMain}
	worker  = goProgram{name: "worker", require: "\tgolang.org/x/text v0.39.0\n",
		main: "package main\n\nimport (\n\t\"fmt\"\n\n\t\"golang.org/x/text/cases\"\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() { fmt.Println(cases.Title(language.English).String(\"worker\")) }\n"}
)

// debianPackages are laid out in the Debian image; base-files gives /etc/debian_version and
// /usr/lib/os-release, so the scanner detects the distribution.
var debianPackages = []string{"base-files", "zlib1g", "libbz2-1.0"}

// Seed builds the demo images (compiled binaries and downloaded packages are cached in cacheDir) and
// pushes them to the registry at host (plain http), signing some. Progress goes to log.
func Seed(host, cacheDir string, log io.Writer) (*Seeded, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	s := &Seeded{Signer: signer, PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}

	goImage := func(prog goProgram, goarch string) (v1.Image, error) {
		bin, err := buildGo(cacheDir, prog, goarch, log)
		if err != nil {
			return nil, err
		}
		return appImage(map[string][]byte{"usr/local/bin/" + prog.name: bin}, goarch, true)
	}
	type item struct {
		repo, tag string
		img       v1.Image
		idx       v1.ImageIndex
		sign      bool
		bundle    bool // sign as cosign v3 does by default (a sigstore bundle referrer), not with a .sig tag
		want      map[string][]string
		about     string
	}
	var items []item
	add := func(repo, tag string, img v1.Image, sign bool, want map[string][]string, about string) {
		items = append(items, item{repo: repo, tag: tag, img: img, sign: sign, want: want, about: about})
	}
	vulnerable, err := goImage(apiV1, "amd64")
	if err != nil {
		return nil, err
	}
	add("shop/api", "v1.0.0", vulnerable, true, map[string][]string{"baseline": nil, "production": {"VulnerabilityThresholdExceeded"}},
		"Go program built against golang.org/x/text v0.3.5 (CVE-2021-38561 and 2 more), signed")
	fixed, err := goImage(apiV2, "amd64")
	if err != nil {
		return nil, err
	}
	add("shop/api", "v1.1.0", fixed, true, map[string][]string{"baseline": nil, "production": nil},
		"the same program against golang.org/x/text v0.39.0, signed as cosign v3 does (sigstore bundle)")
	items[len(items)-1].bundle = true
	unsigned, err := goImage(worker, "amd64")
	if err != nil {
		return nil, err
	}
	add("shop/worker", "v2", unsigned, false, map[string][]string{"baseline": nil, "production": {"SignatureMissing"}},
		"Go program against golang.org/x/text v0.39.0, not signed")
	leaky, err := appImage(map[string][]byte{"srv/app/deploy.env": []byte("REGION=eu-west-1\nAWS_ACCESS_KEY_ID=AKIA" + "Z7VRSQ5TJN2XMPLQ\n")}, "amd64", true)
	if err != nil {
		return nil, err
	}
	add("shop/config", "v1", leaky, true, map[string][]string{"baseline": {"SecretFound"}, "production": {"SecretFound"}},
		"a file with a planted AWS access key, signed")
	arm, err := goImage(apiV2, "arm64")
	if err != nil {
		return nil, err
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: fixed, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	items = append(items, item{repo: "shop/multi", tag: "v1", idx: idx, sign: true,
		want: map[string][]string{"baseline": nil, "production": nil}, about: "linux/amd64 + linux/arm64 index of the fixed program, index signed"})
	if root, err := debianRoot(cacheDir, debianPackages, log); err != nil {
		s.Skipped = append(s.Skipped, "base/debian: "+err.Error())
		fmt.Fprintf(log, "demo: skipping the Debian image: %v\n", err)
	} else {
		defer os.RemoveAll(root)
		layer, err := dirLayer(root)
		if err != nil {
			return nil, err
		}
		img, err := layerImage(layer, "amd64", false)
		if err != nil {
			return nil, err
		}
		if img, err = scantest.RootDockerfileHistory(img); err != nil {
			return nil, err
		}
		add("base/debian", "12", img, false, map[string][]string{"baseline": {"MisconfigurationFound"}},
			"Debian packages ("+fmt.Sprint(debianPackages)+") with /var/lib/dpkg/status, runs as root")
	}

	for _, it := range items {
		ref, err := name.ParseReference(host+"/"+it.repo+":"+it.tag, name.Insecure)
		if err != nil {
			return nil, err
		}
		var d v1.Hash
		if it.idx != nil {
			err = remote.WriteIndex(ref, it.idx)
			if err == nil {
				d, err = it.idx.Digest()
			}
		} else {
			err = remote.Write(ref, it.img)
			if err == nil {
				d, err = it.img.Digest()
			}
		}
		if err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
		switch {
		case it.sign && it.bundle:
			if err := SignBundle(host, it.repo, d.String(), priv); err != nil {
				return nil, err
			}
		case it.sign:
			if err := Sign(host, it.repo, d.String(), signer); err != nil {
				return nil, err
			}
		}
		s.Images = append(s.Images, Image{Repository: it.repo, Tag: it.tag, Digest: d.String(), Signed: it.sign, Want: it.want, About: it.about})
		fmt.Fprintf(log, "demo: pushed %s:%s (%s)\n", it.repo, it.tag, it.about)
	}
	return s, nil
}

// SignBundle signs repo@digest on the registry at host with key as cosign v3 does by default
// (`cosign sign --key` with a signing config without a transparency log): a sigstore bundle stored as
// an OCI 1.1 referrer, under the fallback tag `sha256-<hex>` on a registry without the referrers API.
func SignBundle(host, repo, digest string, key *ecdsa.PrivateKey) error {
	ref, err := name.NewDigest(host+"/"+repo+"@"+digest, name.Insecure)
	if err != nil {
		return err
	}
	if err := (verifytest.BundleSigner{Keypair: verifytest.ECDSAKeypair{Key: key}}).SignImageBundle(ref); err != nil {
		return fmt.Errorf("signing %s (bundle): %w", ref, err)
	}
	return nil
}

// Sign signs repo@digest on the registry at host with signer, as `cosign sign --key
// --tlog-upload=false` does.
func Sign(host, repo, digest string, signer signature.Signer) error {
	ref, err := name.NewDigest(host+"/"+repo+"@"+digest, name.Insecure)
	if err != nil {
		return err
	}
	if err := verifytest.SignImage(ref, signer, ""); err != nil {
		return fmt.Errorf("signing %s: %w", ref, err)
	}
	return nil
}

// appImage is an image of one layer of files for linux/goarch, run as user 65532 (as distroless
// images are).
func appImage(files map[string][]byte, goarch string, nonRoot bool) (v1.Image, error) {
	layer, err := filesLayer(files)
	if err != nil {
		return nil, err
	}
	return layerImage(layer, goarch, nonRoot)
}

// layerImage is an OCI image of one layer for linux/goarch; nonRoot sets the config's user to 65532,
// otherwise it runs as root.
func layerImage(layer v1.Layer, goarch string, nonRoot bool) (v1.Image, error) {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	if nonRoot {
		cf.Config.User = "65532"
	}
	return mutate.ConfigFile(img, cf)
}
