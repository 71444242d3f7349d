package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// list splits a comma-separated flag value as the manager does.
func list(s string) []string { return strings.Split(s, ",") }

func TestCheck(t *testing.T) {
	p, err := Parse(list("127.0.0.1:5000, 10.96.0.0/12:0, fd12::/16"), list("10.96.0.0/12, 192.168.10.0/24"))
	if err == nil {
		t.Fatal(`"10.96.0.0/12:0" parsed as an allow entry`)
	}
	p, err = Parse(list("127.0.0.1:5000, 192.168.10.7, fd12::/16"), list("10.96.0.0/12, 192.168.10.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.10:443", true},             // a public registry
		{"10.1.2.3:5000", true},                // private, not denied: self-hosted registries live here
		{"127.0.0.1:5000", true},               // allowed address and port
		{"127.0.0.1:5001", false},              // loopback, another port
		{"127.0.0.2:5000", false},              // loopback, another address
		{"[::1]:5000", false},                  // loopback v6
		{"169.254.169.254:80", false},          // cloud metadata
		{"[::ffff:169.254.169.254]:80", false}, // the same, IPv4-mapped
		{"[fe80::1]:80", false},                // link-local v6
		{"[fd00:ec2::254]:80", false},          // AWS metadata over IPv6
		{"100.100.100.200:80", false},          // Alibaba metadata
		{"168.63.129.16:80", false},            // Azure WireServer
		{"0.0.0.0:80", false},                  // unspecified: the local host on Linux
		{"[::]:80", false},
		{"224.0.0.1:80", false},
		{"10.96.0.1:443", false},    // the cluster's Service range (the API server's ClusterIP)
		{"192.168.10.9:443", false}, // an admin-denied range
		{"192.168.10.7:443", true},  // ... with one address allowed back
		{"[fd12::5]:443", true},     // an allowed network
		{"[2001:db8::1]:443", true},
	} {
		err := p.Check(netip.MustParseAddrPort(c.addr))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want allowed=%v", c.addr, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v does not wrap ErrNotAllowed", c.addr, err)
		}
	}
	// The most specific entry decides: a broad loopback allowance does not open the API server.
	q, err := Parse(list("127.0.0.0/8"), list("127.0.0.1:6443, 127.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	for addr, ok := range map[string]bool{"127.0.0.1:5000": true, "127.0.0.1:6443": false, "127.0.0.5:80": false, "127.9.9.9:1": true} {
		if err := q.Check(netip.MustParseAddrPort(addr)); (err == nil) != ok {
			t.Errorf("%s: err %v, want allowed=%v", addr, err, ok)
		}
	}
	// ... and an allowance as specific as a denial does not lift it.
	q, _ = Parse(list("10.96.0.1:443"), list("10.96.0.1:443"))
	if err := q.Check(netip.MustParseAddrPort("10.96.0.1:443")); err == nil {
		t.Error("an allow entry equal to a deny entry lifted it")
	}
	var none *Policy
	if err := none.Check(netip.MustParseAddrPort("169.254.169.254:80")); err != nil {
		t.Errorf("a nil policy: %v", err)
	}
	for _, bad := range []string{"", "example.com", "10.0.0.0/33", "1.2.3.4:99999"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) accepted", bad)
		}
	}
}

// TestDialer: the check runs on the address actually connected to, after name resolution and
// across an HTTP redirect, and an allowed address connects.
func TestDialer(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer target.Close()
	tAddr := netip.MustParseAddrPort(target.Listener.Addr().String())
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	defer redirector.Close()
	rAddr := netip.MustParseAddrPort(redirector.Listener.Addr().String())

	get := func(p *Policy, url string) error {
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: p.Dialer(2*time.Second, 0).DialContext}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	// Default: loopback refused, by address and by a name that resolves to it.
	for _, u := range []string{target.URL, "http://localhost:" + strconv.Itoa(int(tAddr.Port()))} {
		if err := get(&Policy{}, u); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("GET %s with the default policy: %v, want ErrNotAllowed", u, err)
		}
	}
	// The redirector allowed, its target not: the redirect is refused at dial time.
	p := &Policy{Allow: []Rule{{Prefix: netip.PrefixFrom(rAddr.Addr(), 32), Port: rAddr.Port()}}}
	if err := get(p, redirector.URL); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("redirect to a refused address: %v, want ErrNotAllowed", err)
	}
	// Both allowed: the request goes through.
	p.Allow = append(p.Allow, Rule{Prefix: netip.PrefixFrom(tAddr.Addr(), 32), Port: tAddr.Port()})
	if err := get(p, redirector.URL); err != nil {
		t.Errorf("both allowed: %v", err)
	}
	// A dial error keeps its kind for callers that classify net errors.
	_, err := (&Policy{}).DialContext(context.Background(), "tcp", "169.254.169.254:80")
	var operr *net.OpError
	if !errors.As(err, &operr) || !errors.Is(err, ErrNotAllowed) {
		t.Errorf("dial error %v (%T): want a *net.OpError wrapping ErrNotAllowed", err, err)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.8.9.10": true, "::1": true,
		"10.0.0.1": false, "0.0.0.0": false, "localhost.evil.test": false, "": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
