package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestNoSecretCache: the manager's cache refuses every read that would start an informer on whole
// Secrets (typed or unstructured, Get, List or informer) and serves their metadata.
func TestNoSecretCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := newNamespace(t)
	if err := k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns}, StringData: map[string]string{"password": "s3cr3t"}}); err != nil {
		t.Fatal(err)
	}
	c, err := NoSecretCache(nil)(suiteCfg, crcache.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	key := client.ObjectKey{Namespace: ns, Name: "creds"}
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(secretKind)
	for err := c.Get(ctx, key, meta); err != nil; err = c.Get(ctx, key, meta) {
		if ctx.Err() != nil {
			t.Fatalf("metadata-only Get: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // until the cache has started
	}
	if meta.UID == "" {
		t.Fatalf("metadata-only Get returned no object: %+v", meta.ObjectMeta)
	}
	unstructuredSecret := &unstructured.Unstructured{}
	unstructuredSecret.SetGroupVersionKind(secretKind)
	unstructuredList := &unstructured.UnstructuredList{}
	unstructuredList.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	for name, read := range map[string]func() error{
		"Get":                      func() error { return c.Get(ctx, key, &corev1.Secret{}) },
		"List":                     func() error { return c.List(ctx, &corev1.SecretList{}) },
		"GetInformer":              func() error { _, err := c.GetInformer(ctx, &corev1.Secret{}); return err },
		"GetInformerForKind":       func() error { _, err := c.GetInformerForKind(ctx, secretKind); return err },
		"Get unstructured":         func() error { return c.Get(ctx, key, unstructuredSecret) },
		"List unstructured":        func() error { return c.List(ctx, unstructuredList) },
		"GetInformer unstructured": func() error { _, err := c.GetInformer(ctx, unstructuredSecret); return err },
	} {
		if err := read(); !errors.Is(err, ErrSecretCache) {
			t.Errorf("%s: want ErrSecretCache, got %v", name, err)
		}
	}
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kube-root-ca.crt"}, cm); client.IgnoreNotFound(err) != nil {
		t.Fatalf("other kinds are cached as before: %v", err)
	}
}
