package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReceiverToken authenticates the demo registry's notifications (a local demo: a fixed value).
const ReceiverToken = "portcullis-demo-receiver-token"

// hookSecret is the Secret holding ReceiverToken.
const hookSecret = "local-registry-hook"

// StartForwarder stands in for the Service in front of the manager's receiver: it listens on a
// free loopback port and forwards each POST to receiverBase plus the receiver path of Registry
// ns/name, read from its status.notifications.path (the registry is started before the Registry
// exists, so its notifications URL cannot name that path). Until the path is known it answers 503,
// and Distribution retries. It returns the URL to give Distribution and a stop function.
func StartForwarder(c client.Reader, ns, name, receiverBase string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg := &unstructured.Unstructured{}
		reg.SetAPIVersion("registry.portcullis.dev/v1alpha1")
		reg.SetKind("Registry")
		if err := c.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, reg); err != nil {
			http.Error(w, "no Registry yet", http.StatusServiceUnavailable)
			return
		}
		path, _, _ := unstructured.NestedString(reg.Object, "status", "notifications", "path")
		if path == "" {
			http.Error(w, "the Registry has no receiver path yet", http.StatusServiceUnavailable)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err != nil {
			http.Error(w, "reading", http.StatusBadRequest)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, receiverBase+path, bytes.NewReader(body))
		if err != nil {
			http.Error(w, "forwarding", http.StatusBadGateway)
			return
		}
		for _, h := range []string{"Authorization", "Content-Type"} {
			req.Header.Set(h, r.Header.Get(h))
		}
		resp, err := hc.Do(req)
		if err != nil {
			http.Error(w, "the manager's receiver does not answer", http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String() + "/notify", func() { _ = srv.Close() }, nil
}

// EnableNotifications turns on the push receiver of Registry ns/name (spec.notifications with a
// Secret holding ReceiverToken), as a platform engineer would after creating it.
func EnableNotifications(ctx context.Context, c client.Client, ns, name string) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: hookSecret, Namespace: ns}, StringData: map[string]string{"token": ReceiverToken}}
	if err := c.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the receiver token Secret: %w", err)
	}
	patch := []byte(`{"spec":{"notifications":{"secretRef":{"name":"` + hookSecret + `"}}}}`)
	reg := &unstructured.Unstructured{}
	reg.SetAPIVersion("registry.portcullis.dev/v1alpha1")
	reg.SetKind("Registry")
	reg.SetNamespace(ns)
	reg.SetName(name)
	if err := c.Patch(ctx, reg, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return fmt.Errorf("turning on the Registry's notifications: %w", err)
	}
	return nil
}
