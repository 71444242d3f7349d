package controller

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestEgressRefusals: a namespace editor's Registry that points the manager at a cloud metadata
// address, at the API server, at a loopback address the admin did not allow, or at an allowed
// registry that redirects there or names a token realm there, is refused at dial time: the
// condition says HostNotAllowed and why, and the refused address never receives a request. Every
// host here passes --allowed-registry-hosts, so only the dial-time check stands in the way.
func TestEgressRefusals(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)

	// A server on 127.0.0.2 (loopback, not allowed by the suite's egress policy) that would answer
	// like a registry; it counts what reaches it.
	var reached atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	forbidden := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if strings.HasPrefix(r.URL.Path, "/token") {
			_, _ = w.Write([]byte(`{"token":"t"}`))
			return
		}
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		_, _ = w.Write([]byte(`{"repositories":[]}`))
	}))
	forbidden.Listener = l
	forbidden.Start()
	defer forbidden.Close()
	// The same on the suite's denied 127.0.0.1 port, named "localhost" in a token realm: go-containerregistry
	// refuses a realm that is a private IP literal itself, a name only the dial-time check catches.
	denied := &http.Server{Handler: forbidden.Config.Handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = denied.Serve(deniedLoopback) }()
	defer denied.Close()
	_, deniedPort, _ := net.SplitHostPort(deniedLoopback.Addr().String())

	// Allowed registries (127.0.0.1) that send the manager to the forbidden one.
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, forbidden.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://localhost:`+deniedPort+`/token",service="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		_, _ = w.Write([]byte(`{"repositories":[]}`))
	}))
	defer realm.Close()
	api, err := url.Parse(suiteCfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := netip.MustParseAddrPort(api.Host)

	for _, tc := range []struct {
		name, url, address string
	}{
		{"metadata", "https://169.254.169.254", "169.254.169.254:443"},
		{"api-server", "https://" + api.Host, apiAddr.String()},
		{"loopback", forbidden.URL, forbidden.Listener.Addr().String()},
		{"redirect", redirect.URL, forbidden.Listener.Addr().String()},
		{"token-realm", realm.URL, deniedLoopback.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := validRegistry()
			obj.Name, obj.Namespace = tc.name, ns
			obj.Spec.URL, obj.Spec.Insecure = tc.url, strings.HasPrefix(tc.url, "http:")
			obj.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			got := waitFor(t, obj, "refused by the egress policy", func(r *v1alpha1.Registry) bool {
				c := findCondition(r, v1alpha1.ReadyCondition)
				return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.HostNotAllowedReason
			})
			msg := findCondition(got, v1alpha1.ReadyCondition).Message
			if !strings.Contains(msg, "egress policy") || !strings.Contains(msg, tc.address) {
				t.Errorf("message %q does not say that the egress policy refused %s", msg, tc.address)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the refused address received %d requests", n)
	}
}
