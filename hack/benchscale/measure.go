package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

const (
	namespace = "default"
	benchName = "bench"
	pollEvery = 2 * time.Second
	pageSize  = 500
)

// bench runs the measurement: it owns the verdict counter (fed by a watch) and the results.
type bench struct {
	o     options
	c     client.WithWatch
	proxy *proxy
	mgr   *managerProc
	res   *results

	mu       sync.Mutex
	t0       time.Time
	state    map[string]bool // ImageAttestation name -> has a verdict
	verdicts int
	allDone  chan struct{} // closed when N ImageAttestations have a verdict
	lastLog  time.Time

	// The milestones, set by the watch (b.mu held) and copied into res by copyMilestones.
	firstVerdict, allVerdicts time.Duration
	proxyAtAll                counts
}

// hasVerdict: PolicyCompliant is True or False (not Unknown, not absent).
func hasVerdict(ia *v1alpha1.ImageAttestation) bool {
	c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition)
	return c != nil && (c.Status == metav1.ConditionTrue || c.Status == metav1.ConditionFalse)
}

// startWatch lists the ImageAttestations (none yet) and keeps counting verdicts from a watch in the
// background until ctx ends.
func (b *bench) startWatch(ctx context.Context) error {
	b.allDone = make(chan struct{})
	rv, err := b.relist(ctx)
	if err != nil {
		return fmt.Errorf("listing ImageAttestations: %w", err)
	}
	go b.watchLoop(ctx, rv)
	return nil
}

// relist replaces the state with a paged list (pageSize per page) and returns its resource version.
func (b *bench) relist(ctx context.Context) (string, error) {
	state := map[string]bool{}
	rv, cont := "", ""
	for {
		list := &v1alpha1.ImageAttestationList{}
		if err := b.c.List(ctx, list, client.InNamespace(namespace), client.Limit(pageSize), client.Continue(cont)); err != nil {
			return "", err
		}
		if rv == "" {
			rv = list.ResourceVersion
		}
		for i := range list.Items {
			state[list.Items[i].Name] = hasVerdict(&list.Items[i])
		}
		if cont = list.Continue; cont == "" {
			break
		}
	}
	b.mu.Lock()
	b.state, b.verdicts = state, 0
	for _, v := range state {
		if v {
			b.verdicts++
		}
	}
	b.milestonesLocked()
	b.mu.Unlock()
	return rv, nil
}

func (b *bench) watchLoop(ctx context.Context, rv string) {
	for ctx.Err() == nil {
		w, err := b.c.Watch(ctx, &v1alpha1.ImageAttestationList{}, client.InNamespace(namespace),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		relist := false
		if err != nil {
			relist = apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
			if !relist {
				if ctx.Err() == nil {
					logf("watching ImageAttestations: %v; retrying", err)
				}
				sleep(ctx, time.Second)
				continue
			}
		} else {
			rv, relist = b.consume(ctx, w, rv)
			w.Stop()
		}
		if relist && ctx.Err() == nil {
			if newRV, err := b.relist(ctx); err == nil {
				rv = newRV
			} else if ctx.Err() == nil {
				logf("listing ImageAttestations: %v; retrying", err)
				sleep(ctx, time.Second)
			}
		}
	}
}

// consume applies the watch's events until it ends; relist is true when it ended with an error
// event (e.g. the resource version expired).
func (b *bench) consume(ctx context.Context, w watch.Interface, rv string) (string, bool) {
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
			ia, ok := ev.Object.(*v1alpha1.ImageAttestation)
			if !ok {
				continue
			}
			rv = ia.ResourceVersion
			b.mu.Lock()
			had, existed := b.state[ia.Name]
			if existed && had {
				b.verdicts--
			}
			if ev.Type == watch.Deleted {
				delete(b.state, ia.Name)
			} else {
				v := hasVerdict(ia)
				b.state[ia.Name] = v
				if v {
					b.verdicts++
				}
			}
			b.milestonesLocked()
			b.mu.Unlock()
		case watch.Bookmark:
			if o, ok := ev.Object.(client.Object); ok {
				rv = o.GetResourceVersion()
			}
		case watch.Error:
			if ctx.Err() == nil {
				logf("watch error: %v; listing again", apierrors.FromObject(ev.Object))
			}
			return rv, true
		}
	}
	return rv, false
}

// milestonesLocked records the first verdict and all verdicts (b.mu held).
func (b *bench) milestonesLocked() {
	if b.t0.IsZero() {
		return
	}
	if b.verdicts > 0 && b.firstVerdict == 0 {
		b.firstVerdict = time.Since(b.t0)
	}
	if b.verdicts >= b.o.n && b.allVerdicts == 0 {
		b.allVerdicts = time.Since(b.t0)
		b.proxyAtAll = b.proxy.snapshot()
		close(b.allDone)
	}
}

// copyMilestones copies the milestones and the progress into b.res.
func (b *bench) copyMilestones() {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.res
	r.firstVerdict, r.allVerdicts, r.proxyAtAll = b.firstVerdict, b.allVerdicts, b.proxyAtAll
	r.seen, r.verdicts = len(b.state), b.verdicts
}

// progress returns the ImageAttestations seen and those with a verdict.
func (b *bench) progress() (seen, verdicts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.state), b.verdicts
}

// createObjects creates the policy, then the Registry (t0); the policy first, so that the first
// listing already finds the images selected.
func (b *bench) createObjects(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	zero := int32(0)
	pol := &v1alpha1.RepositoryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: benchName, Namespace: namespace},
		Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef:  v1alpha1.LocalObjectReference{Name: benchName},
			Repositories: []string{"**"},
			Mode:         v1alpha1.ModeAudit,
			Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{
				Name: "bench-key", Key: &v1alpha1.KeyAuthority{Data: pub}, IgnoreTransparencyLog: true,
			}}},
			Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: &zero}},
		},
	}
	if err := b.c.Create(ctx, pol); err != nil {
		return fmt.Errorf("creating the RepositoryPolicy: %w", err)
	}
	reg := &v1alpha1.Registry{
		ObjectMeta: metav1.ObjectMeta{Name: benchName, Namespace: namespace},
		Spec: v1alpha1.RegistrySpec{
			URL: b.proxy.url, Insecure: true,
			Interval: &metav1.Duration{Duration: b.o.interval},
			Timeout:  &metav1.Duration{Duration: 30 * time.Minute},
		},
	}
	b.mu.Lock()
	b.t0 = time.Now()
	b.mu.Unlock()
	if err := b.c.Create(ctx, reg); err != nil {
		return fmt.Errorf("creating the Registry: %w", err)
	}
	return nil
}

// measure creates the objects and measures the first pass and the steady intervals into b.res.
func (b *bench) measure(ctx context.Context) (err error) {
	r := b.res
	defer func() {
		b.copyMilestones()
		if b.mgr.exited() == nil {
			r.memEnd = sampleMemory(b.mgr.pid())
			r.peak.max(r.memEnd)
		}
		if err != nil && ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("timed out after %s (-timeout)", b.o.timeout)
			} else {
				err = errors.New("interrupted")
			}
		}
	}()
	if err := b.createObjects(ctx); err != nil {
		return err
	}
	logf("Registry %q created (t0); waiting for %d verdicts", benchName, b.o.n)

	// The first pass.
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.mgr.done:
			return b.mgr.exited()
		case <-b.allDone:
			done = true
		case <-tick.C:
			b.poll(ctx)
		}
	}
	r.memFirstPass = sampleMemory(b.mgr.pid())
	r.peak.max(r.memFirstPass)
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		if r.metricsAtAll, err = scrape(ctx, b.mgr.metricsURL); err == nil {
			break
		}
		logf("reading the manager's metrics: %v", err)
		sleep(ctx, time.Second)
	}
	err = nil
	b.observe(r.metricsAtAll)
	b.copyMilestones()
	logf("all %d verdicts in %s (first verdict after %s)", b.o.n, r.allVerdicts.Round(100*time.Millisecond), r.firstVerdict.Round(100*time.Millisecond))

	// The steady intervals, from one complete listing to the next.
	if b.o.steady == 0 {
		return nil
	}
	m := r.metricsAtAll
	byListing := m.haveListing
	if !byListing {
		r.boundary = "wall clock (-interval); the manager exports no portcullis_registry_last_listing_timestamp_seconds"
		logf("no listing timestamp metric: steady intervals by wall clock")
	} else {
		r.boundary = "portcullis_registry_last_listing_timestamp_seconds advancing (listing to listing)"
		logf("waiting for the next complete listing to start the steady intervals")
		if m, err = b.waitListing(ctx, m.lastListing); err != nil {
			return err
		}
	}
	prev := point{at: time.Now(), proxy: b.proxy.snapshot(), metrics: m}
	for i := 1; i <= b.o.steady; i++ {
		if !byListing {
			if err := b.sleepPolling(ctx, b.o.interval); err != nil {
				return err
			}
			if mm, err := scrape(ctx, b.mgr.metricsURL); err == nil {
				m = mm
			} else {
				logf("reading the manager's metrics: %v (the interval's scans and writes read 0)", err)
			}
		} else if m, err = b.waitListing(ctx, prev.metrics.lastListing); err != nil {
			return err
		}
		cur := point{at: time.Now(), proxy: b.proxy.snapshot(), metrics: m}
		s := steadyResult{
			length: cur.at.Sub(prev.at), proxy: cur.proxy.sub(prev.proxy),
			scans: cur.metrics.scans - prev.metrics.scans, writes: cur.metrics.writes - prev.metrics.writes,
			reportWrites: cur.metrics.reportWrites - prev.metrics.reportWrites,
		}
		r.steady = append(r.steady, s)
		logf("steady interval %d of %d: %s, %.2f registry requests per tag, %.0f scans, %d blob GETs, %.0f API writes",
			i, b.o.steady, s.length.Round(time.Second), float64(s.proxy.total())/float64(b.o.n), s.scans, s.proxy.byKind[kindBlobGet], s.writes)
		prev = cur
	}
	return nil
}

// point is the counters at one instant.
type point struct {
	at      time.Time
	proxy   counts
	metrics metricsSnap
}

// poll samples memory for the peaks and the metrics for the first listing, and prints progress
// every 10 s.
func (b *bench) poll(ctx context.Context) {
	mem := sampleMemory(b.mgr.pid())
	b.res.peak.max(mem)
	m, _ := scrape(ctx, b.mgr.metricsURL)
	b.observe(m)
	if time.Since(b.lastLog) < 10*time.Second {
		return
	}
	b.lastLog = time.Now()
	seen, verdicts := b.progress()
	b.mu.Lock()
	el := time.Since(b.t0)
	b.mu.Unlock()
	logf("t0+%s: %d ImageAttestations, %d of %d verdicts, %.0f scans, %d registry requests, manager %s, workers %s (%d)",
		el.Round(time.Second), seen, verdicts, b.o.n, m.scans, b.proxy.snapshot().total(), mib(mem.manager), mib(mem.children), mem.nChildren)
}

// observe records when the first listing completed (the metric's own timestamp, so not rounded
// to the polling period).
func (b *bench) observe(m metricsSnap) {
	if !m.haveListing || b.res.firstListing != 0 {
		return
	}
	b.mu.Lock()
	t0 := b.t0
	b.mu.Unlock()
	at := time.Unix(0, int64(m.lastListing*1e9))
	if d := at.Sub(t0); d > 0 {
		b.res.firstListing = d
	}
}

// waitListing polls the metrics every second until the listing timestamp passes after.
func (b *bench) waitListing(ctx context.Context, after float64) (metricsSnap, error) {
	last := time.Now()
	for {
		m, err := scrape(ctx, b.mgr.metricsURL)
		if err == nil && m.lastListing > after {
			return m, nil
		}
		if time.Since(last) >= pollEvery {
			b.poll(ctx)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case <-b.mgr.done:
			return m, b.mgr.exited()
		case <-time.After(time.Second):
		}
	}
}

// sleepPolling waits d, polling as usual.
func (b *bench) sleepPolling(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.mgr.done:
			return b.mgr.exited()
		case <-time.After(min(pollEvery, time.Until(end))):
			b.poll(ctx)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// metricsSnap holds the manager metrics the table uses.
type metricsSnap struct {
	ok            bool
	scans         float64 // portcullis_scans_total, all results
	verifications float64 // portcullis_verifications_total, all results
	writes        float64 // rest_client_requests_total with method POST, PUT, PATCH or DELETE
	reportWrites  float64 // portcullis_policy_report_writes_total, all formats (--policy-reports)
	reads         float64 // rest_client_requests_total, other methods
	haveListing   bool
	lastListing   float64 // portcullis_registry_last_listing_timestamp_seconds{registry="default/bench"}
	// The sums and counts of portcullis_scan_duration_seconds and
	// portcullis_verification_duration_seconds.
	scanSum, scanCount, verifySum, verifyCount float64
}

var metricsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

// scrape reads the manager's /metrics (Prometheus text format).
func scrape(ctx context.Context, url string) (metricsSnap, error) {
	var m metricsSnap
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return m, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return m, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parseMetrics(resp.Body, &m)
	m.ok = true
	return m, nil
}

// parseMetrics reads the samples it needs from the text format; lines are
// `name{labels} value [timestamp]`.
func parseMetrics(r io.Reader, m *metricsSnap) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, rest := line, "", ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		switch name {
		case "portcullis_scans_total":
			m.scans += v
		case "portcullis_verifications_total":
			m.verifications += v
		case "portcullis_policy_report_writes_total":
			m.reportWrites += v
		case "rest_client_requests_total":
			write := false
			for _, meth := range []string{"POST", "PUT", "PATCH", "DELETE"} {
				write = write || strings.Contains(labels, `method="`+meth+`"`)
			}
			if write {
				m.writes += v
			} else {
				m.reads += v
			}
		case "portcullis_scan_duration_seconds_sum":
			m.scanSum = v
		case "portcullis_scan_duration_seconds_count":
			m.scanCount = v
		case "portcullis_verification_duration_seconds_sum":
			m.verifySum = v
		case "portcullis_verification_duration_seconds_count":
			m.verifyCount = v
		case "portcullis_registry_last_listing_timestamp_seconds":
			if strings.Contains(labels, `registry="`+namespace+"/"+benchName+`"`) {
				m.lastListing, m.haveListing = v, true
			}
		}
	}
}

// results is what the run measured; zero values are shown as "—" (not measured).
type results struct {
	firstVerdict, allVerdicts time.Duration
	firstListing              time.Duration // t0 to the end of the first complete listing
	proxyAtAll                counts
	metricsAtAll              metricsSnap
	seen, verdicts            int
	boundary                  string
	steady                    []steadyResult
	memFirstPass, memEnd      memSample
	peak                      memSample // per field: the largest value seen
}

// steadyResult is one steady-state interval.
type steadyResult struct {
	length        time.Duration
	proxy         counts
	scans, writes float64
	reportWrites  float64
}

func (s *memSample) max(o memSample) {
	if o.manager > s.manager {
		s.manager, s.managerFile = o.manager, o.managerFile
	}
	s.children = max(s.children, o.children)
	s.nChildren = max(s.nChildren, o.nChildren)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

const none = "—"

// table renders the results as a Markdown table; measureErr, when set, marks it incomplete.
func (r *results) table(o options, measureErr error) string {
	var sb strings.Builder
	n := float64(o.n)
	row := func(metric, value string) { fmt.Fprintf(&sb, "| %s | %s |\n", metric, value) }
	secs := func(d time.Duration) string {
		if d == 0 {
			return none
		}
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	per := func(v int64) string { // two decimals, three below 0.1 so that one catalog read shows
		if x := float64(v) / n; x < 0.1 {
			return fmt.Sprintf("%.3f", x)
		}
		return fmt.Sprintf("%.2f", float64(v)/n)
	}
	images := "two layers (a shared ~1 KiB base + an own 4 KiB layer)"
	if o.tiny {
		images = "tiny (config only, no layers)"
	}
	sb.WriteString("| metric | value |\n|---|---|\n")
	row("date", time.Now().Format("2006-01-02 15:04 MST"))
	row("nproc", fmt.Sprint(runtime.NumCPU()))
	row("images (N)", fmt.Sprint(o.n))
	row("repositories", fmt.Sprint(o.repos))
	row("image kind", images)
	row("Registry interval", o.interval.String())
	row("manager extra flags", joinArgs(o.managerArgs))
	if measureErr != nil {
		row("**result**", fmt.Sprintf("**incomplete: %v**", measureErr))
	}
	row("ImageAttestations at the end (with a verdict)", fmt.Sprintf("%d (%d)", r.seen, r.verdicts))
	row("first listing complete (after t0)", secs(r.firstListing))
	row("time to first verdict", secs(r.firstVerdict))
	row("time to all verdicts", secs(r.allVerdicts))
	if r.allVerdicts > 0 {
		pa, m := r.proxyAtAll, r.metricsAtAll
		row("images per second (first pass)", fmt.Sprintf("%.1f", n/r.allVerdicts.Seconds()))
		row("registry requests per image (first pass)", per(pa.total()))
		for k := range numKinds {
			row("&nbsp;&nbsp;"+kindNames[k], per(pa.byKind[k]))
		}
		row("&nbsp;&nbsp;of the manifest requests: by cosign tag", per(pa.cosignTags))
		row("&nbsp;&nbsp;answered 404 / 5xx or failed", per(pa.notFound)+" / "+per(pa.errors))
		if m.ok {
			row("scans (first pass)", fmt.Sprintf("%.0f", m.scans))
			row("signature verifications (first pass)", fmt.Sprintf("%.0f", m.verifications))
			if m.scanCount > 0 {
				row("mean scan duration (first pass)", fmt.Sprintf("%.2f s", m.scanSum/m.scanCount))
			}
			if m.verifyCount > 0 {
				row("mean verification duration (first pass)", fmt.Sprintf("%.3f s", m.verifySum/m.verifyCount))
			}
			row("API writes per image (first pass)", fmt.Sprintf("%.2f", m.writes/n))
			row("API reads per image (first pass)", fmt.Sprintf("%.2f", m.reads/n))
			if m.reportWrites > 0 {
				row("PolicyReport writes (first pass)", fmt.Sprintf("%.0f", m.reportWrites))
			}
		}
	}
	if o.steady > 0 {
		if r.boundary != "" {
			row("steady interval boundary", r.boundary)
		}
		for i := range o.steady {
			p := fmt.Sprintf("steady interval %d: ", i+1)
			if i >= len(r.steady) {
				row(p+"registry requests per tag", none)
				continue
			}
			s := r.steady[i]
			row(p+"length", secs(s.length))
			row(p+"registry requests per tag", per(s.proxy.total()))
			var kinds []string
			for k := range numKinds {
				if s.proxy.byKind[k] > 0 {
					kinds = append(kinds, kindNames[k]+" "+per(s.proxy.byKind[k]))
				}
			}
			if s.proxy.cosignTags > 0 {
				kinds = append(kinds, "(by cosign tag "+per(s.proxy.cosignTags)+")")
			}
			if len(kinds) > 0 {
				row(p+"requests per tag by kind", strings.Join(kinds, ", "))
			}
			row(p+"scans", fmt.Sprintf("%.0f", s.scans))
			row(p+"blob downloads (GET)", fmt.Sprint(s.proxy.byKind[kindBlobGet]))
			row(p+"API writes", fmt.Sprintf("%.0f", s.writes))
			if r.metricsAtAll.reportWrites > 0 {
				row(p+"PolicyReport writes", fmt.Sprintf("%.0f", s.reportWrites))
			}
		}
	}
	mem := func(s memSample, children bool) string {
		switch {
		case s.manager == 0:
			return none
		case !children:
			return fmt.Sprintf("%s (file-backed %s)", mib(s.manager), mib(s.managerFile))
		case s.nChildren == 0:
			return "0 (no child process)"
		}
		if s.nChildren == 1 {
			return mib(s.children) + " (1 process)"
		}
		return fmt.Sprintf("%s (%d processes)", mib(s.children), s.nChildren)
	}
	row("manager RSS, end of first pass", mem(r.memFirstPass, false))
	row("scan worker RSS, end of first pass", mem(r.memFirstPass, true))
	row("manager RSS, end", mem(r.memEnd, false))
	row("scan worker RSS, end", mem(r.memEnd, true))
	row("manager RSS, peak (2 s samples)", mem(r.peak, false))
	row("scan worker RSS, peak (2 s samples)", mem(r.peak, true))
	return sb.String()
}
