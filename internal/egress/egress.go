// Package egress decides, at dial time, which network addresses the manager may connect to on a
// tenant's behalf, and provides the one dialer that every outbound connection to a registry, a token
// realm, a redirect target or a Harbor API goes through.
//
// A check of spec.url alone is not enough: a token realm (the WWW-Authenticate challenge), an HTTP
// redirect, a blob's Location or a DNS name that resolves to an internal address all lead elsewhere.
// The check therefore runs in net.Dialer's ControlContext hook, on the very IP address and port being
// connected to after name resolution, so neither a redirect nor DNS rebinding gets past it (the
// approach of Go's SSRF-safe dialers, e.g. code.dny.dev/ssrf, and of Smokescreen).
//
// By default a Policy refuses the addresses a tenant should never reach through the operator:
// loopback, link-local (169.254.0.0/16, the cloud metadata endpoints among them, and fe80::/10),
// unspecified, multicast and broadcast addresses, the other well-known metadata endpoints (AWS's
// fd00:ec2::254, Alibaba's 100.100.100.200, Azure's WireServer 168.63.129.16), and any network the
// admin adds (the cluster's Service and Pod ranges, the API server's own address). Private ranges
// (10/8, 172.16/12, 192.168/16) are allowed, since that is where self-hosted registries live; an admin
// who wants them closed lists them in Deny. Allow entries open exceptions: the local demo allows its
// loopback registry that way. Where entries overlap, the most specific one decides, as in a routing
// table: the longer prefix, then an entry with a port over one without; an allowance as specific as
// a default denial lifts it, one as specific as an admin's denial does not. So allowing 127.0.0.0/8
// for a local registry still refuses a denied 127.0.0.1:6443.
//
// With an HTTP proxy (HTTPS_PROXY), the dialer connects to the proxy, so the proxy's address is what
// is checked; the proxy then enforces its own egress rules.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrNotAllowed is wrapped by every refusal: the address is in a denied range and no Allow entry
// covers it.
var ErrNotAllowed = errors.New("address not allowed by the manager's egress policy")

// defaultDenied are the ranges refused unless allowed, with the reason shown in the error.
var defaultDenied = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (cloud metadata endpoints live here)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata endpoint"},
	{netip.MustParsePrefix("100.100.100.200/32"), "cloud metadata endpoint"},
	{netip.MustParsePrefix("168.63.129.16/32"), "cloud platform endpoint"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
}

// Policy is the manager's egress policy. The zero value applies the default denials with no
// exception. Build one with Parse or fill it in; it is read only once in use. A nil *Policy allows
// everything: tests and library callers that set none; the manager always sets one.
type Policy struct {
	// Allow are exceptions to the denials.
	Allow []Rule
	// Deny are refused besides the default ones: the cluster's Service and Pod ranges (a Registry
	// must not reach the API server or a Pod through the cluster network), the API server's address.
	Deny []Rule
}

// Rule is one entry: every address of Prefix, on Port only when Port is not 0.
type Rule struct {
	Prefix netip.Prefix
	Port   uint16
}

// String is the rule as ParseRule reads it.
func (r Rule) String() string {
	if r.Port != 0 && r.Prefix.IsSingleIP() {
		return netip.AddrPortFrom(r.Prefix.Addr(), r.Port).String()
	}
	return r.Prefix.String()
}

// matches reports whether the rule covers a (unmapped) on port.
func (r Rule) matches(a netip.Addr, port uint16) bool {
	return r.Prefix.Contains(a) && (r.Port == 0 || r.Port == port)
}

// moreSpecific reports whether r decides over o for an address both match.
func (r Rule) moreSpecific(o Rule) bool {
	if r.Prefix.Bits() != o.Prefix.Bits() {
		return r.Prefix.Bits() > o.Prefix.Bits()
	}
	return r.Port != 0 && o.Port == 0
}

// ParseRule reads an entry: a network in CIDR notation ("10.0.0.0/8", "fd00::/8"), one address
// ("127.0.0.1", "::1"), or one address and port ("127.0.0.1:5000", "[::1]:5000").
func ParseRule(s string) (Rule, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return Rule{Prefix: unmapPrefix(p)}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a := ap.Addr().Unmap()
		return Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: ap.Port()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return Rule{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	return Rule{}, fmt.Errorf("egress rule %q: want a CIDR network, an IP address, or IP:port", s)
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// Parse builds a Policy from the manager's flag values, one entry each (see ParseRule).
func Parse(allow, deny []string) (*Policy, error) {
	p := &Policy{}
	for _, l := range []struct {
		s  []string
		to *[]Rule
	}{{allow, &p.Allow}, {deny, &p.Deny}} {
		for _, s := range l.s {
			r, err := ParseRule(s)
			if err != nil {
				return nil, err
			}
			*l.to = append(*l.to, r)
		}
	}
	return p, nil
}

// Check returns nil when the policy lets the manager connect to ap, and otherwise an error wrapping
// ErrNotAllowed that names the address and why (never anything a server sent).
func (p *Policy) Check(ap netip.AddrPort) error {
	if p == nil {
		return nil
	}
	a, port := ap.Addr().Unmap(), ap.Port()
	var deny, allow *Rule
	why, byAdmin := "", false
	for _, d := range defaultDenied {
		r := Rule{Prefix: d.prefix}
		if r.matches(a, port) && (deny == nil || r.moreSpecific(*deny)) {
			deny, why = &r, d.why+" address"
		}
	}
	if deny == nil && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()) {
		r := Rule{Prefix: netip.PrefixFrom(a, 0)} // a form the table does not spell out: least specific
		deny, why = &r, "link-local address"
	}
	for i := range p.Deny {
		if r := p.Deny[i]; r.matches(a, port) && (deny == nil || r.moreSpecific(*deny)) {
			deny, why, byAdmin = &p.Deny[i], "denied by the entry "+r.String(), true
		}
	}
	if deny == nil {
		return nil
	}
	for i := range p.Allow {
		if r := p.Allow[i]; r.matches(a, port) && (allow == nil || r.moreSpecific(*allow)) {
			allow = &p.Allow[i]
		}
	}
	// An allowance lifts a default denial it is at least as specific as, and an admin's own denial
	// only when it is more specific.
	if allow != nil && (allow.moreSpecific(*deny) || (!byAdmin && !deny.moreSpecific(*allow))) {
		return nil
	}
	return fmt.Errorf("connecting to %s: %w: %s (an admin can allow it with --egress-allow)",
		netip.AddrPortFrom(a, port), ErrNotAllowed, why)
}

// Dialer returns a dialer that refuses, before connecting, every address the policy does not allow.
// timeout and keepAlive are net.Dialer's.
func (p *Policy) Dialer(timeout, keepAlive time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: keepAlive}
	d.ControlContext = func(_ context.Context, network, address string, _ syscall.RawConn) error {
		return p.control(network, address)
	}
	return d
}

// control is the dial-time check on the resolved address ("ip:port").
func (p *Policy) control(network, address string) error {
	if p == nil {
		return nil
	}
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return fmt.Errorf("dialing %s %s: %w: only TCP and UDP", network, address, ErrNotAllowed)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s: %w: not an IP address and port", address, ErrNotAllowed)
	}
	return p.Check(ap)
}

// DialContext is Dialer(10s, 30s).DialContext, for transports that take a dial function.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return p.Dialer(10*time.Second, 30*time.Second).DialContext(ctx, network, address)
}

// IsLoopbackHost reports whether host (a URL's host name, without port) names this machine:
// `localhost` or a loopback IP address (127.0.0.0/8, ::1). It looks the name up nowhere; the dial-time
// check is Policy's.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
