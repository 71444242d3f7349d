package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
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

// Retention outcomes of a digest in the preview (RetentionDigest.Now and WouldBe).
const (
	// OutcomeKeep: the plan keeps the digest.
	OutcomeKeep = "Keep"
	// OutcomeDelete: the plan deletes the digest and the manager would delete it (mode Enforce,
	// dryRun false, maxDeletionsPerPass above 0).
	OutcomeDelete = "Delete"
	// OutcomeDryRun: the plan deletes the digest, but the manager only reports it (mode Audit, or
	// dryRun, or maxDeletionsPerPass 0).
	OutcomeDryRun = "DryRun"
)

// RetentionDigest is one digest whose fate the retention preview reports.
type RetentionDigest struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags,omitempty"`
	// Created is the image's build time (RFC 3339), empty when unknown (accessories have none).
	Created string `json:"created,omitempty"`
	// Now is the outcome (Keep, Delete, DryRun) under the policy as applied, WouldBe under the policy
	// in the file; empty when that policy has no retention or does not govern the repository.
	Now     string `json:"now,omitempty"`
	WouldBe string `json:"wouldBe,omitempty"`
	// Reason is policy.PlanRetention's reason for WouldBe (NoRuleRetains, SubjectDeleted, InUse, ...),
	// or for Now when the file's policy does not plan the digest.
	Reason string `json:"reason"`
}

// RetentionWhatIf is the retention plan the policy in the file would make, beside the applied
// policy's, from the same listing of the registry and the same planner (retention.Plan) as the
// manager's.
type RetentionWhatIf struct {
	// Skipped says why no plan was made (a Harbor Registry, --skip-retention, a failure); the counts
	// are then empty. Failed is true when the preview failed (the command exits 2).
	Skipped string `json:"skipped,omitempty"`
	Failed  bool   `json:"failed,omitempty"`
	// AppliedElsewhere names the applied policy's Registry when the file moves the policy to
	// another one: the applied policy's retention there would stop (not listed).
	AppliedElsewhere string `json:"appliedElsewhere,omitempty"`
	// Planned is true when the file's policy has retention.
	Planned bool `json:"planned"`
	// Deletes is true when the manager would delete under the file's policy (mode Enforce, dryRun
	// false, maxDeletionsPerPass above 0), at most MaxDeletionsPerPass digests per pass; false when it
	// would only report the plan, and then Holds says why ("mode Audit", "dryRun",
	// "maxDeletionsPerPass 0"). NowDeletes and NowHolds are the same for the applied policy.
	Deletes             bool   `json:"deletes"`
	Holds               string `json:"holds,omitempty"`
	NowDeletes          bool   `json:"nowDeletes"`
	NowHolds            string `json:"nowHolds,omitempty"`
	MaxDeletionsPerPass int32  `json:"maxDeletionsPerPass"`
	// Repositories, Kept and ToDelete count the file's plan (nothing when it has no retention).
	Repositories int `json:"repositories"`
	Kept         int `json:"kept"`
	ToDelete     int `json:"toDelete"`
	// NowToDelete is how many digests the applied policy's plan deletes in the same listing; nil
	// when the applied policy has no retention (or there is none).
	NowToDelete *int `json:"nowToDelete,omitempty"`
	// Digests are the digests either plan deletes: by repository, then in the order the manager
	// would delete them under the file's policy, then the applied policy's others.
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

// hasRetention reports whether p is a policy with spec.retention.
func hasRetention(p *v1alpha1.RepositoryPolicy) bool { return p != nil && p.Spec.Retention != nil }

// protectsInUse reports whether p's retention protects the digests workloads use (the default).
func protectsInUse(p *v1alpha1.RepositoryPolicy) bool {
	return hasRetention(p) && (p.Spec.Retention.ProtectInUse == nil || *p.Spec.Retention.ProtectInUse)
}

// holds says why the manager would not delete what p's plan deletes ("" when it would: mode
// Enforce, dryRun false and a deletion budget, as the manager's RetentionReconciler decides).
func holds(p *v1alpha1.RepositoryPolicy) string {
	r := p.Spec.Retention
	switch {
	case p.Spec.Mode != v1alpha1.ModeEnforce:
		return "mode " + cmp.Or(string(p.Spec.Mode), string(v1alpha1.ModeAudit))
	case r.DryRun == nil || *r.DryRun:
		return "dryRun"
	case r.MaxDeletionsPerPass != nil && *r.MaxDeletionsPerPass <= 0:
		return "maxDeletionsPerPass 0"
	}
	return ""
}

func deletes(p *v1alpha1.RepositoryPolicy) bool { return holds(p) == "" }

// previewRetention lists the repositories of pol's Registry that pol or applied governs with
// retention, and plans them under both. It reads the registry (GET and HEAD only) and, when either
// protects in-use digests, the cluster's Pods and workloads; it writes nothing. Nil when neither
// policy has retention.
func previewRetention(ctx context.Context, cl client.Reader, pol, applied *v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation,
	opts retentionOptions, now time.Time, progress io.Writer) (*RetentionWhatIf, error) {
	elsewhere := ""
	if applied != nil && applied.Spec.RegistryRef.Name != pol.Spec.RegistryRef.Name {
		if hasRetention(applied) {
			elsewhere = applied.Spec.RegistryRef.Name
		}
		applied = nil // it plans another Registry: its plan there would stop
	}
	switch {
	case !hasRetention(pol) && !hasRetention(applied) && elsewhere == "":
		return nil, nil
	case opts.skip:
		return &RetentionWhatIf{Planned: hasRetention(pol), AppliedElsewhere: elsewhere, Skipped: "--skip-retention: the registry was not read", Digests: []RetentionDigest{}}, nil
	case !hasRetention(pol) && !hasRetention(applied):
		return &RetentionWhatIf{AppliedElsewhere: elsewhere, Digests: []RetentionDigest{}}, nil
	}
	reg := &v1alpha1.Registry{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil {
		return nil, fmt.Errorf("reading Registry %s/%s: %w", pol.Namespace, pol.Spec.RegistryRef.Name, err)
	}
	if reg.Spec.Provider == v1alpha1.ProviderHarbor {
		return &RetentionWhatIf{Planned: hasRetention(pol), AppliedElsewhere: elsewhere, Digests: []RetentionDigest{}, Skipped: "Harbor runs retention itself from the rules Portcullis pushes; apply the policy with dryRun: true and read status.enforcement.retentionRuns for Harbor's own dry run"}, nil
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
	rc, anonymous, err := registryClient(ctx, cl, reg, opts.auth)
	if err != nil {
		return nil, err
	}
	listings, missing, err := listRepositories(ctx, rc, governed(ias, pol, applied), listWorkers, anonymous, progress)
	if err != nil {
		return nil, err
	}
	var pods *retention.PodImages
	var notes []string
	if opts.auth == AuthSecret && reg.Spec.SecretRef == nil {
		notes = append(notes, "the Registry has no secretRef: the registry was read anonymously, as the manager reads it")
	}
	for _, repo := range missing {
		notes = append(notes, fmt.Sprintf("%s: the registry no longer has this repository (deleted since the Registry's last listing); nothing to plan", repo))
	}
	if protectsInUse(pol) || protectsInUse(applied) {
		if pods, err = retention.ListPodImages(ctx, cl); err != nil {
			pods = nil
			notes = append(notes, fmt.Sprintf("Pods and workloads could not be listed (%v): digests in use are not protected in this preview, the manager protects them", err))
		}
	}
	out := PlanRetentionWhatIf(pol, applied, others, listings, pods, now)
	out.AppliedElsewhere = elsewhere
	out.Notes = append(notes, out.Notes...)
	return &out, nil
}

// PlanRetentionWhatIf plans each repository's listing under pol and under applied (nil: none),
// each where it has retention and governs the repository, as the manager would: retention.Plan,
// with the digests pods uses protected for a policy that protects in-use digests (pods nil: none
// known). Pure.
func PlanRetentionWhatIf(pol, applied *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, listings map[string]retention.Listing,
	pods *retention.PodImages, now time.Time) RetentionWhatIf {
	out := RetentionWhatIf{Digests: []RetentionDigest{}}
	if hasRetention(pol) {
		out.Planned, out.Deletes, out.Holds, out.MaxDeletionsPerPass = true, deletes(pol), holds(pol), 10
		if m := pol.Spec.Retention.MaxDeletionsPerPass; m != nil {
			out.MaxDeletionsPerPass = *m
		}
	}
	if hasRetention(applied) {
		out.NowToDelete, out.NowDeletes, out.NowHolds = new(int), deletes(applied), holds(applied)
	}
	// plan is p's plan of repo and the outcome of each digest; ok false when p does not plan it.
	plan := func(p *v1alpha1.RepositoryPolicy, repo string, images []policy.RetentionImage) (policy.RetentionPlan, map[string]string, bool) {
		if !hasRetention(p) || !policy.MatchAny(p.Spec.Repositories, repo) {
			return policy.RetentionPlan{}, nil, false
		}
		var inUse map[string]bool
		if pods != nil && protectsInUse(p) {
			inUse = pods.InUse(repo, images)
		}
		pl := retention.Plan(p, others, repo, images, inUse, now)
		outcome := map[string]string{}
		for _, it := range pl.Keep {
			outcome[it.Digest] = OutcomeKeep
		}
		del := OutcomeDryRun
		if deletes(p) {
			del = OutcomeDelete
		}
		for _, it := range pl.Delete {
			outcome[it.Digest] = del
		}
		return pl, outcome, true
	}
	unsure := map[string]int{}
	for _, repo := range slices.Sorted(maps.Keys(listings)) {
		lst := listings[repo]
		mine, wouldBe, planned := plan(pol, repo, lst.Images)
		theirs, nowOutcome, _ := plan(applied, repo, lst.Images)
		if !planned && nowOutcome == nil {
			continue
		}
		if !lst.Complete {
			out.Notes = append(out.Notes, fmt.Sprintf("%s: a tag or digest vanished while listing; the manager deletes nothing in a repository on such a listing", repo))
		}
		created := map[string]time.Time{}
		for _, img := range lst.Images {
			created[img.Digest] = img.Created
		}
		if planned {
			out.Repositories++
			out.Kept += len(mine.Keep)
			out.ToDelete += len(mine.Delete)
		}
		if out.NowToDelete != nil {
			*out.NowToDelete += len(theirs.Delete)
		}
		keptFor := map[string]string{}
		for _, it := range mine.Keep {
			keptFor[it.Digest] = it.Reason
			switch it.Reason {
			case policy.RetainedTimeUnknown, policy.RetainedTimeImplausible, policy.RetainedSubjectUnknown:
				unsure[it.Reason]++
			}
		}
		seen := map[string]bool{}
		for _, it := range slices.Concat(mine.Delete, theirs.Delete) {
			if seen[it.Digest] {
				continue
			}
			seen[it.Digest] = true
			d := RetentionDigest{Repository: repo, Digest: it.Digest, Tags: it.Tags, Now: nowOutcome[it.Digest], WouldBe: wouldBe[it.Digest], Reason: it.Reason}
			if r, kept := keptFor[it.Digest]; kept {
				d.Reason = r // kept by the file's policy: say why
			}
			if t := created[it.Digest]; !t.IsZero() {
				d.Created = t.UTC().Format(time.RFC3339)
			}
			out.Digests = append(out.Digests, d)
		}
	}
	// The rows whose outcome changes first (the text shows 50), each group by repository and plan order.
	slices.SortStableFunc(out.Digests, func(a, b RetentionDigest) int {
		return cmp.Compare(boolInt(a.Now == a.WouldBe), boolInt(b.Now == b.WouldBe))
	})
	for _, u := range []struct{ reason, why string }{
		{policy.RetainedTimeUnknown, "the build time is unknown"},
		{policy.RetainedTimeImplausible, "the build time is implausible (before 2000, as reproducible builds stamp it, or in the future)"},
		{policy.RetainedSubjectUnknown, "a signature or attestation's subject is not in the listing"},
	} {
		if n := unsure[u.reason]; n > 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("%s kept because %s (%s), whatever the rules say", plural(n, "digest"), u.why, u.reason))
		}
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Changed reports whether the file's policy would decide some digest otherwise than the applied
// policy: delete one it keeps or only plans (dry run), keep one it deletes, plan or stop planning
// one; or move the policy off a Registry where the applied one plans retention.
func (r *RetentionWhatIf) Changed() bool {
	if r == nil {
		return false
	}
	if r.AppliedElsewhere != "" {
		return true
	}
	return r.Skipped == "" && slices.ContainsFunc(r.Digests, func(d RetentionDigest) bool { return d.Now != d.WouldBe })
}

// governed is the repositories of pol's Registry in the inventory that pol or applied (nil: none)
// governs with retention, sorted: the repositories the manager plans under either.
func governed(ias []v1alpha1.ImageAttestation, pol, applied *v1alpha1.RepositoryPolicy) []string {
	seen := map[string]bool{}
	for i := range ias {
		ia := &ias[i]
		if ia.Namespace != pol.Namespace || ia.Spec.RegistryRef.Name != pol.Spec.RegistryRef.Name {
			continue
		}
		for _, p := range []*v1alpha1.RepositoryPolicy{pol, applied} {
			if hasRetention(p) && policy.MatchAny(p.Spec.Repositories, ia.Spec.Repository) {
				seen[ia.Spec.Repository] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
