package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/demo"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// startRegistry runs CNCF Distribution on addr (or a free loopback port when addr is taken), with
// its storage under dir and notifications to notify (nil: none), and pushes the demo images
// (internal/demo; builds cached in cacheDir). It returns the registry, the public key of the run's
// signing key and a stop function.
func startRegistry(bin, addr, dir, cacheDir string, notify *registrytest.NotifyEndpoint) (*registrytest.Distribution, *demo.Seeded, func(), error) {
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
	d, stop, err := registrytest.Start(bin, registrytest.Options{Addr: addr, Dir: dir, Notify: notify})
	if err != nil {
		return nil, nil, nil, err
	}
	seeded, err := demo.Seed(d.Host, cacheDir, os.Stderr)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	fmt.Fprintf(os.Stderr, "localenv: registry %s up with %d images; the signed ones are signed with a key made for this run\n", d.URL, len(seeded.Images))
	return d, seeded, stop, nil
}

// showVerdicts waits until every ImageAttestation of the namespace has a current verdict (Ready=True)
// or the timeout passes, showing progress, then prints what a user sees with kubectl: the three
// kinds, and the description of one non-compliant image. It reports whether every verdict came in.
func showVerdicts(ctx context.Context, c client.Client, kubeconfig, ns string, timeout time.Duration) bool {
	start := time.Now()
	deadline := start.Add(timeout)
	last := ""
	var nonCompliant string
	done := false
	for ctx.Err() == nil {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("registry.portcullis.dev/v1alpha1")
		list.SetKind("ImageAttestationList")
		ready := 0
		nonCompliant = "" // the first by name (the API lists by name), once all verdicts are in
		if err := c.List(ctx, list, client.InNamespace(ns)); err == nil {
			for _, ia := range list.Items {
				if conditionStatus(ia, "Ready") == "True" {
					ready++
				}
				if conditionStatus(ia, "PolicyCompliant") == "False" && nonCompliant == "" {
					nonCompliant = ia.GetName()
				}
			}
		}
		progress := fmt.Sprintf("localenv: waiting for verdicts: %d of %d images done", ready, len(list.Items))
		if progress != last && len(list.Items) > 0 {
			fmt.Fprintf(os.Stderr, "%s (%s)\n", progress, time.Since(start).Round(time.Second))
			last = progress
		}
		done = len(list.Items) > 0 && ready == len(list.Items)
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if ctx.Err() != nil {
		return false
	}
	time.Sleep(time.Second) // let the policies count the last verdicts
	kubectl := func(args ...string) { _ = runKubectl(ctx, kubeconfig, args...) }
	kubectl("get", "registries,repositorypolicies,imageattestations", "-n", ns)
	if nonCompliant != "" {
		kubectl("describe", "imageattestation", nonCompliant, "-n", ns)
	}
	fmt.Fprintf(os.Stderr, "\nlocalenv: verdicts in %s; running until Ctrl-C. export KUBECONFIG=%s to look around\n",
		time.Since(start).Round(time.Second), kubeconfig)
	return done
}

// runKubectl prints and runs `kubectl args...` against kubeconfig, its output on stdout.
func runKubectl(ctx context.Context, kubeconfig string, args ...string) error {
	fmt.Println("\n$ kubectl " + strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, kubectlPath(), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	return cmd.Run()
}

func conditionStatus(u unstructured.Unstructured, typ string) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

func kubectlPath() string {
	if p := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"); fileExists(p) {
		return p
	}
	return "kubectl"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// showPushReceiver pushes one more image and prints how long its verdict took: the registry's
// notification reaches the manager's push receiver, so no listing is waited for.
func showPushReceiver(ctx context.Context, c client.Client, d *registrytest.Distribution) {
	img, err := registrytest.NewRandomImage()
	if err != nil {
		return
	}
	const repo, tag = "shop/api", "v1.3.0"
	start := time.Now()
	digest, err := d.PushImage(repo, tag, img)
	if err != nil {
		fmt.Fprintln(os.Stderr, "localenv: pushing", repo+":"+tag+":", err)
		return
	}
	name := v1alpha1.ImageAttestationName("local", repo, digest)
	for ctx.Err() == nil && time.Since(start) < 2*time.Minute {
		ia := &unstructured.Unstructured{}
		ia.SetAPIVersion("registry.portcullis.dev/v1alpha1")
		ia.SetKind("ImageAttestation")
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, ia); err == nil && conditionStatus(*ia, "Ready") == "True" {
			fmt.Fprintf(os.Stderr, "localenv: pushed %s:%s after the first verdicts; its verdict (PolicyCompliant=%s) came %.1f s after the push, "+
				"through the push receiver (the registry notifies the manager; no listing waited for)\n",
				repo, tag, conditionStatus(*ia, "PolicyCompliant"), time.Since(start).Seconds())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "localenv: no verdict for", repo+":"+tag, "within 2 minutes of its push")
}
