package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// startRegistry runs CNCF Distribution on addr (or a free loopback port when addr is taken), with
// its storage under dir, and pushes a few images: two tags of one digest (signed with a key made
// here, whose public PEM is returned), a second digest, a development tag the sample policy
// excludes, a two-platform index, and a repository the sample Registry excludes.
func startRegistry(bin, addr, dir string) (*registrytest.Distribution, []byte, func(), error) {
	if l, err := net.Listen("tcp", addr); err != nil {
		fmt.Fprintf(os.Stderr, "localenv: %s is taken, using a free port for the registry\n", addr)
		addr = ""
	} else {
		_ = l.Close()
	}
	_ = os.RemoveAll(dir) // a fresh registry every run, so the seeded set is always the same
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	d, stop, err := registrytest.Start(bin, registrytest.Options{Addr: addr, Dir: dir})
	if err != nil {
		return nil, nil, nil, err
	}
	var imgs [5]v1.Image
	for i := range imgs {
		if imgs[i], err = registrytest.NewRandomImage(); err != nil {
			stop()
			return nil, nil, nil, err
		}
	}
	idx, err := registrytest.NewPlatformIndex("linux/amd64", "linux/arm64/v8")
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	seed := []struct {
		ref string
		img v1.Image
		idx v1.ImageIndex
	}{
		{ref: "team-a/api:v1", img: imgs[0]}, {ref: "team-a/api:latest", img: imgs[0]}, {ref: "team-a/api:v2", img: imgs[1]},
		{ref: "team-a/api:v3-dev", img: imgs[2]}, {ref: "team-b/web:v1", img: imgs[3]},
		{ref: "team-b/multi:v1", idx: idx}, {ref: "scratch/tmp:v1", img: imgs[4]},
	}
	for _, s := range seed {
		ref, err := name.ParseReference(d.Host+"/"+s.ref, name.Insecure)
		if err == nil && s.idx != nil {
			err = remote.WriteIndex(ref, s.idx)
		} else if err == nil {
			err = remote.Write(ref, s.img)
		}
		if err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("seeding %s: %w", s.ref, err)
		}
	}
	pub, err := signSeed(d, "team-a/api", imgs[0])
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	fmt.Fprintf(os.Stderr, "localenv: registry %s up with %d seeded tags; team-a/api:v1 signed with a key made for this run\n", d.URL, len(seed))
	return d, pub, stop, nil
}

// signSeed signs repo's image img with a new ECDSA P-256 key, as `cosign sign --key
// --tlog-upload=false` does, and returns the PEM public key.
func signSeed(d *registrytest.Distribution, repo string, img v1.Image) ([]byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	ref, err := name.NewDigest(d.Host+"/"+repo+"@"+dg.String(), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := verifytest.SignImage(ref, signer, ""); err != nil {
		return nil, fmt.Errorf("signing %s: %w", ref, err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// applySamples creates every object of the samples folder in namespace ns, with the Registry's url
// pointed at registryURL and the first key authority of a policy set to pubPEM.
func applySamples(ctx context.Context, c client.Client, dir, ns, registryURL string, pubPEM []byte) error {
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := readYAML(filepath.Join(dir, "kustomization.yaml"), &kust); err != nil {
		return err
	}
	for _, f := range kust.Resources {
		u := &unstructured.Unstructured{}
		if err := readYAML(filepath.Join(dir, f), &u.Object); err != nil {
			return err
		}
		if u.GetKind() == "ImageAttestation" {
			continue // written by the manager, not by users
		}
		u.SetNamespace(ns)
		if u.GetKind() == "Registry" {
			if err := unstructured.SetNestedField(u.Object, registryURL, "spec", "url"); err != nil {
				return err
			}
		}
		if auths, ok, _ := unstructured.NestedSlice(u.Object, "spec", "verification", "authorities"); ok && len(auths) > 0 && pubPEM != nil {
			if a, ok := auths[0].(map[string]any); ok && a["key"] != nil {
				a["key"] = map[string]any{"data": string(pubPEM)}
				a["ignoreTransparencyLog"] = true
				if err := unstructured.SetNestedSlice(u.Object, auths, "spec", "verification", "authorities"); err != nil {
					return err
				}
			}
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	return nil
}

// showWhenListed waits until the namespace holds ImageAttestations and then prints what a user sees
// with kubectl.
func showWhenListed(ctx context.Context, c client.Client, kubeconfig, ns string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("registry.portcullis.dev/v1alpha1")
		list.SetKind("ImageAttestationList")
		if err := c.List(ctx, list, client.InNamespace(ns)); err == nil && len(list.Items) > 0 {
			time.Sleep(2 * time.Second) // let the pass finish its writes
			cmd := exec.CommandContext(ctx, kubectlPath(), "--kubeconfig", kubeconfig, "-n", ns,
				"get", "registries,repositorypolicies,imageattestations")
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			fmt.Println("\n$ kubectl get registries,repositorypolicies,imageattestations -n " + ns)
			_ = cmd.Run()
			fmt.Fprintln(os.Stderr, "\nlocalenv: running until Ctrl-C; export KUBECONFIG="+kubeconfig+" to look around")
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func kubectlPath() string {
	if p := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"); fileExists(p) {
		return p
	}
	return "kubectl"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, into)
}
