package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/retention"
)

// Registry credentials for the retention preview (--registry-auth).
const (
	// AuthKeychain: the user's own registry logins (~/.docker/config.json, $DOCKER_CONFIG, and the
	// credential helpers named there), as docker, crane and cosign use them.
	AuthKeychain = "keychain"
	// AuthSecret: the Registry's spec.secretRef, read from the cluster (needs get on that Secret).
	AuthSecret = "secret"
	// AuthAnonymous: no credentials.
	AuthAnonymous = "anonymous"
)

// RetentionDigest is one digest whose fate the retention preview reports.
type RetentionDigest struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags,omitempty"`
	// Created is the image's build time (RFC 3339), empty when unknown (accessories have none).
	Created string `json:"created,omitempty"`
	// Now is Keep or Delete under the policy as applied, empty when it has no retention; WouldBe
	// under the policy in the file.
	Now     string `json:"now,omitempty"`
	WouldBe string `json:"wouldBe"`
	// Reason is policy.PlanRetention's reason for WouldBe (NoRuleRetains, SubjectDeleted, InUse, ...).
	Reason string `json:"reason"`
}

// RetentionWhatIf is the retention plan the policy in the file would make, from the same listing
// of the registry and the same planner (retention.Plan) as the manager's.
type RetentionWhatIf struct {
	// Skipped says why no plan was made (a Harbor Registry, --skip-retention); the rest is then empty.
	Skipped string `json:"skipped,omitempty"`
	// Deletes is true when the manager would delete (mode Enforce and dryRun false), at most
	// MaxDeletionsPerPass digests per pass; false when it would only report the plan.
	Deletes             bool  `json:"deletes"`
	MaxDeletionsPerPass int32 `json:"maxDeletionsPerPass"`
	Repositories        int   `json:"repositories"`
	Kept                int   `json:"kept"`
	ToDelete            int   `json:"toDelete"`
	// NowToDelete is how many digests the applied policy's rules delete in the same listing; nil
	// when the applied policy has no retention (or there is none).
	NowToDelete *int `json:"nowToDelete,omitempty"`
	// Digests are the digests the file's policy deletes and those the applied policy deletes that
	// the file's keeps: by repository, then in the order the manager would delete them.
	Digests []RetentionDigest `json:"digests"`
	// Notes say what the preview could not see as the manager does.
	Notes []string `json:"notes,omitempty"`
}

// retentionOptions are what-if's retention flags.
type retentionOptions struct {
	auth string
	skip bool
}

// listWorkers is how many repositories the preview lists at once (the Registry's request rate,
// spec.requests.perSecond, caps them together).
const listWorkers = 4

// previewRetention lists the governed repositories of pol's Registry and plans them under pol and
// under applied. It reads the registry (GET and HEAD only) and, with protectInUse, the cluster's Pods
// and workloads; it writes nothing.
func previewRetention(ctx context.Context, cl client.Reader, pol, applied *v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation,
	opts retentionOptions, now time.Time, progress io.Writer) (*RetentionWhatIf, error) {
	if pol.Spec.Retention == nil {
		return nil, nil
	}
	reg := &v1alpha1.Registry{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil {
		return nil, fmt.Errorf("reading Registry %s/%s: %w", pol.Namespace, pol.Spec.RegistryRef.Name, err)
	}
	switch {
	case opts.skip:
		return &RetentionWhatIf{Skipped: "--skip-retention: the registry was not read"}, nil
	case reg.Spec.Provider == v1alpha1.ProviderHarbor:
		return &RetentionWhatIf{Skipped: "Harbor runs retention itself from the rules Portcullis pushes; apply the policy with dryRun: true and read status.enforcement.retentionRuns for Harbor's own dry run"}, nil
	}
	pols := &v1alpha1.RepositoryPolicyList{}
	if err := cl.List(ctx, pols, client.InNamespace(pol.Namespace)); err != nil {
		return nil, fmt.Errorf("listing RepositoryPolicies: %w", err)
	}
	var others []v1alpha1.RepositoryPolicy
	for _, o := range pols.Items {
		if o.Name != pol.Name && o.Spec.Retention != nil && o.Spec.RegistryRef.Name == pol.Spec.RegistryRef.Name {
			others = append(others, o)
		}
	}
	repos := governed(pol, ias)
	rc, err := registryClient(ctx, cl, reg, opts.auth)
	if err != nil {
		return nil, err
	}
	listings, err := listRepositories(ctx, rc, repos, listWorkers, progress)
	if err != nil {
		return nil, err
	}
	var pods *retention.PodImages
	var notes []string
	if pol.Spec.Retention.ProtectInUse == nil || *pol.Spec.Retention.ProtectInUse {
		if pods, err = retention.ListPodImages(ctx, cl); err != nil {
			pods = nil
			notes = append(notes, fmt.Sprintf("Pods and workloads could not be listed (%v): digests in use are not protected in this preview, the manager protects them", err))
		}
	}
	out := PlanRetentionWhatIf(pol, applied, others, listings, pods, now)
	out.Notes = append(notes, out.Notes...)
	return &out, nil
}

// PlanRetentionWhatIf plans each repository's listing under pol and, when it has retention, under
// applied, as the manager would (retention.Plan, with what pods uses protected when the policy
// protects in-use digests; pods nil: none known). Pure.
func PlanRetentionWhatIf(pol, applied *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, listings map[string]retention.Listing,
	pods *retention.PodImages, now time.Time) RetentionWhatIf {
	spec := pol.Spec.Retention
	out := RetentionWhatIf{Deletes: pol.Spec.Mode == v1alpha1.ModeEnforce && spec.DryRun != nil && !*spec.DryRun,
		MaxDeletionsPerPass: 10, Digests: []RetentionDigest{}}
	if spec.MaxDeletionsPerPass != nil {
		out.MaxDeletionsPerPass = *spec.MaxDeletionsPerPass
	}
	if applied != nil && applied.Spec.Retention != nil {
		out.NowToDelete = new(int)
	} else {
		applied = nil
	}
	plan := func(p *v1alpha1.RepositoryPolicy, repo string, images []policy.RetentionImage) policy.RetentionPlan {
		var inUse map[string]bool
		if pods != nil && (p.Spec.Retention.ProtectInUse == nil || *p.Spec.Retention.ProtectInUse) {
			inUse = pods.InUse(repo, images)
		}
		return retention.Plan(p, others, repo, images, inUse, now)
	}
	unsure := map[string]int{}
	for _, repo := range slices.Sorted(maps.Keys(listings)) {
		lst := listings[repo]
		if !lst.Complete {
			out.Notes = append(out.Notes, fmt.Sprintf("%s: a tag or digest vanished while listing; the manager deletes nothing in a repository on such a listing", repo))
		}
		created := map[string]time.Time{}
		for _, img := range lst.Images {
			created[img.Digest] = img.Created
		}
		row := func(it policy.PlanItem, nowAction, wouldBe string) RetentionDigest {
			d := RetentionDigest{Repository: repo, Digest: it.Digest, Tags: it.Tags, Now: nowAction, WouldBe: wouldBe, Reason: it.Reason}
			if t := created[it.Digest]; !t.IsZero() {
				d.Created = t.UTC().Format(time.RFC3339)
			}
			return d
		}
		mine := plan(pol, repo, lst.Images)
		out.Repositories++
		out.Kept += len(mine.Keep)
		out.ToDelete += len(mine.Delete)
		theirs := map[string]string{}
		if applied != nil {
			p := plan(applied, repo, lst.Images)
			*out.NowToDelete += len(p.Delete)
			for _, it := range p.Keep {
				theirs[it.Digest] = policy.ActionKeep
			}
			for _, it := range p.Delete {
				theirs[it.Digest] = policy.ActionDelete
			}
		}
		for _, it := range mine.Delete {
			out.Digests = append(out.Digests, row(it, theirs[it.Digest], policy.ActionDelete))
		}
		for _, it := range mine.Keep {
			switch it.Reason {
			case policy.RetainedTimeUnknown, policy.RetainedTimeImplausible, policy.RetainedSubjectUnknown:
				unsure[it.Reason]++
			}
			if theirs[it.Digest] == policy.ActionDelete {
				out.Digests = append(out.Digests, row(it, policy.ActionDelete, policy.ActionKeep))
			}
		}
	}
	for _, u := range []struct{ reason, why string }{
		{policy.RetainedTimeUnknown, "their build time is unknown"},
		{policy.RetainedTimeImplausible, "their build time is implausible (before 2000, as reproducible builds stamp it, or in the future)"},
		{policy.RetainedSubjectUnknown, "they are signatures or attestations of a digest not in the listing"},
	} {
		if n := unsure[u.reason]; n > 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("%d digests are kept because %s (%s), whatever the rules say", n, u.why, u.reason))
		}
	}
	return out
}

// Changed reports whether the file's plan deletes other digests than the applied policy's.
func (r *RetentionWhatIf) Changed() bool {
	if r == nil || r.Skipped != "" {
		return false
	}
	return slices.ContainsFunc(r.Digests, func(d RetentionDigest) bool { return d.Now != d.WouldBe })
}

// governed is the repositories of pol's Registry in the inventory that pol's repositories select,
// sorted: the repositories the manager plans.
func governed(pol *v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation) []string {
	seen := map[string]bool{}
	for i := range ias {
		ia := &ias[i]
		if ia.Namespace == pol.Namespace && ia.Spec.RegistryRef.Name == pol.Spec.RegistryRef.Name && policy.MatchAny(pol.Spec.Repositories, ia.Spec.Repository) {
			seen[ia.Spec.Repository] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// registryClient is a read-only client of reg's registry with the credentials auth names. The CA
// of spec.certSecretRef is read from the cluster when set. Credentials are never printed.
func registryClient(ctx context.Context, cl client.Reader, reg *v1alpha1.Registry, auth string) (*registry.Client, error) {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("Registry %s/%s: spec.url %q is not an absolute URL", reg.Namespace, reg.Name, reg.Spec.URL)
	}
	cfg := registry.Config{URL: reg.Spec.URL, Insecure: reg.Spec.Insecure, MetricsName: "cli/" + reg.Namespace + "/" + reg.Name}
	if rq := reg.Spec.Requests; rq != nil && rq.PerSecond != nil {
		cfg.RequestsPerSecond = float64(*rq.PerSecond)
	}
	secret := func(name string) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		if err := cl.Get(ctx, client.ObjectKey{Namespace: reg.Namespace, Name: name}, s); err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s of Registry %s: %w", reg.Namespace, name, reg.Name, err)
		}
		return s, nil
	}
	switch auth {
	case AuthKeychain:
		host, err := name.NewRegistry(u.Host, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("registry host %q: %w", u.Host, err)
		}
		if cfg.Auth, err = authn.DefaultKeychain.Resolve(host); err != nil {
			return nil, fmt.Errorf("reading your registry logins for %s: %w", u.Host, err)
		}
	case AuthSecret:
		if reg.Spec.SecretRef == nil {
			break // the Registry is read anonymously
		}
		s, err := secret(reg.Spec.SecretRef.Name)
		if err != nil {
			return nil, err
		}
		if cfg.Auth, err = registry.AuthFromSecret(s, strings.ToLower(u.Host)); err != nil {
			return nil, err
		}
	case AuthAnonymous:
	default:
		return nil, fmt.Errorf("unknown --registry-auth %q: want %s, %s or %s", auth, AuthKeychain, AuthSecret, AuthAnonymous)
	}
	if ref := reg.Spec.CertSecretRef; ref != nil {
		s, err := secret(ref.Name)
		if err != nil {
			return nil, err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(s.Data["ca.crt"]) {
			return nil, fmt.Errorf("Secret %s/%s: ca.crt holds no PEM certificate", reg.Namespace, ref.Name)
		}
		cfg.CAPEM = s.Data["ca.crt"]
	}
	return registry.New(cfg)
}

// listRepositories lists repos (retention.List, as the manager lists before planning deletions),
// workers at a time, printing progress every 2 s. The first error stops the others.
func listRepositories(ctx context.Context, rc *registry.Client, repos []string, workers int, progress io.Writer) (map[string]retention.Listing, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		out      = map[string]retention.Listing{}
		firstErr error
		wg       sync.WaitGroup
		last     = time.Now()
	)
	cache := &retention.Cache{}
	next := make(chan string)
	for range min(workers, max(1, len(repos))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for repo := range next {
				lst, err := retention.List(ctx, rc, cache, repo)
				mu.Lock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = listError(repo, err)
					cancel()
				case err == nil:
					out[repo] = lst
					if time.Since(last) >= 2*time.Second {
						last = time.Now()
						fmt.Fprintf(progress, "portcullis: listed %d of %d repositories...\n", len(out), len(repos))
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, repo := range repos {
		select {
		case next <- repo:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// listError explains a listing failure, with what to do about refused credentials.
func listError(repo string, err error) error {
	if errors.Is(err, registry.ErrUnauthorized) {
		return fmt.Errorf("listing %s for the retention preview: %w: log in to the registry (docker login, crane auth login), or use --registry-auth=secret to use the Registry's own credentials, or --skip-retention", repo, err)
	}
	return fmt.Errorf("listing %s for the retention preview: %w", repo, err)
}

// maxRetentionRows bounds the text table; -o json lists every digest.
const maxRetentionRows = 50

// writeRetention writes the retention preview as text (nothing without one).
func writeRetention(w io.Writer, r *RetentionWhatIf) {
	if r == nil {
		return
	}
	fmt.Fprintln(w)
	if r.Skipped != "" {
		fmt.Fprintf(w, "Retention: not previewed: %s.\n", r.Skipped)
		return
	}
	mode := "dry run: the manager would only report this plan in status.retention"
	if r.Deletes {
		mode = fmt.Sprintf("mode Enforce, dryRun false: the manager would delete these, at most %d per pass", r.MaxDeletionsPerPass)
	}
	fmt.Fprintf(w, "Retention (%s):\n", mode)
	applied := "the applied policy has no retention"
	if r.NowToDelete != nil {
		applied = fmt.Sprintf("the applied policy deletes %d", *r.NowToDelete)
	}
	repos := "repositories"
	if r.Repositories == 1 {
		repos = "repository"
	}
	fmt.Fprintf(w, "%d digests in %d %s: %d would be deleted, %d kept (%s).\n", r.ToDelete+r.Kept, r.Repositories, repos, r.ToDelete, r.Kept, applied)
	if len(r.Digests) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DIGEST\tTAGS\tCREATED\tNOW\tWOULD BE\tREASON")
		for _, d := range r.Digests[:min(len(r.Digests), maxRetentionRows)] {
			nowAction := d.Now
			if nowAction == "" {
				nowAction = "-"
			}
			fmt.Fprintf(tw, "%s@%s\t%s\t%s\t%s\t%s\t%s\n", d.Repository, shortDigest(d.Digest), orDash(shortTags(d.Tags)), orDash(d.Created),
				nowAction, d.WouldBe, d.Reason)
		}
		_ = tw.Flush()
		if n := len(r.Digests) - maxRetentionRows; n > 0 {
			fmt.Fprintf(w, "... and %d more (-o json lists them all).\n", n)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// shortTags joins tags for the table, a cosign or referrers tag ("sha256-<64 hex>.sig") shortened to
// 12 hex digits like the digests.
func shortTags(tags []string) string {
	out := make([]string, len(tags))
	for i, t := range tags {
		if _, ok := policy.AccessoryTag(t); ok && len(t) > 19 {
			alg, rest, _ := strings.Cut(t, "-")
			hex, suffix, _ := strings.Cut(rest, ".")
			t = alg + "-" + hex[:12] + "…"
			if suffix != "" {
				t += "." + suffix
			}
		}
		out[i] = t
	}
	return strings.Join(out, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDigest is "sha256:" and the first 12 hex digits, as the tables show digests.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
