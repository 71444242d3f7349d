package controller

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portcullis-dev/portcullis/internal/egress"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=list

// ClusterEgressDenials are the cluster's own addresses that no Registry may reach, to add to the
// egress policy's Deny entries: the API server's address and port as apiServer (the manager's
// rest.Config Host, a URL; a name is resolved now) and the cluster's Service ranges, read once from
// the ServiceCIDR API (networking.k8s.io/v1, Kubernetes 1.33 and later). A cluster without that API,
// or a manager not allowed to list it, yields the API server alone and a note saying why (the
// admin then names the ranges with --egress-deny). Pod ranges are not discoverable in general
// (each CNI keeps its own): the admin names them with --egress-deny.
func ClusterEgressDenials(ctx context.Context, reader client.Reader, apiServer string) (rules []egress.Rule, note string, err error) {
	if u, perr := url.Parse(apiServer); perr == nil && u.Host != "" {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80"}[u.Scheme]
			if port == "" {
				port = "443"
			}
		}
		addrs, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
		if lerr != nil {
			return nil, "", fmt.Errorf("resolving the API server's host %q: %w", u.Hostname(), lerr)
		}
		for _, a := range addrs {
			r, perr := egress.ParseRule(net.JoinHostPort(a.Unmap().String(), port))
			if perr != nil {
				return nil, "", perr
			}
			rules = append(rules, r)
		}
	}
	list := &networkingv1.ServiceCIDRList{}
	switch err := reader.List(ctx, list); {
	case apimeta.IsNoMatchError(err), apierrors.IsNotFound(err):
		return rules, "this cluster has no ServiceCIDR API: name the Service range with --egress-deny", nil
	case apierrors.IsForbidden(err):
		return rules, "the manager may not list ServiceCIDRs: name the Service range with --egress-deny", nil
	case err != nil:
		return nil, "", fmt.Errorf("listing ServiceCIDRs: %w", err)
	}
	for _, sc := range list.Items {
		for _, c := range sc.Spec.CIDRs {
			p, perr := netip.ParsePrefix(c)
			if perr != nil {
				continue // the API server validates them; a bad one is not ours to refuse on
			}
			rules = append(rules, egress.Rule{Prefix: p.Masked()})
		}
	}
	return rules, "", nil
}
