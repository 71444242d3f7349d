package controller

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/store"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// Reasons of the SignatureVerified condition beyond verify's per-authority reasons.
const (
	verifiedReason    = "Verified"
	notRequiredReason = "NotRequired"
)

// maxSignatureResults bounds status.signatures (the API's MaxItems).
const maxSignatureResults = 64

// verification is what the ImageAttestation controller keeps between passes: compiled verifiers
// per policy generation and key material, and results per digest, so an unchanged digest is not
// re-verified on every pass (only once its entry is older than the Registry's interval).
type verification struct {
	mu        sync.Mutex
	verifiers map[string]*verify.Verifier  // policy UID/generation/material hash
	results   map[string]verificationEntry // verifier key + digest
	referrers map[string]referrersSeen     // digest -> its last referrers fingerprint
	// store keeps every result across restarts (nil: memory only).
	store *store.Store
}

type verificationEntry struct {
	result verify.ImageResult
	at     time.Time
}

// maxCachedResults bounds the result cache when there is no durable store; past it the cache starts
// afresh (results are cheap to recompute, a leak is not). With a store, which keeps every result,
// memory holds only the last maxCachedWithStore (about 1 KiB each, so 100,000 digests do not cost
// 100 MiB of heap for what a bbolt read answers in microseconds).
const (
	maxCachedResults   = 50_000
	maxCachedWithStore = 4096
)

func (v *verification) verifier(key string, compile func() (*verify.Verifier, error)) (*verify.Verifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.verifiers[key]; ok {
		return c, nil
	}
	c, err := compile()
	if err != nil {
		return nil, err
	}
	if v.verifiers == nil || len(v.verifiers) > 1000 {
		v.verifiers = map[string]*verify.Verifier{}
	}
	v.verifiers[key] = c
	return c, nil
}

func (v *verification) cached(key string, maxAge time.Duration) (verify.ImageResult, bool) {
	v.mu.Lock()
	e, ok := v.results[key]
	v.mu.Unlock()
	if !ok {
		if e, ok = v.storedResult(key); ok {
			v.remember(key, e)
		}
	}
	return e.result, ok && time.Since(e.at) < maxAge
}

func (v *verification) put(ctx context.Context, key string, r verify.ImageResult) {
	e := verificationEntry{result: r, at: time.Now()}
	v.remember(key, e)
	if v.store != nil {
		if err := v.store.Put(store.Verifications, key, storedVerification{Result: r, At: e.at}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "writing a verification result to the store")
		}
	}
}

func (v *verification) remember(key string, e verificationEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	limit := maxCachedResults
	if v.store != nil {
		limit = maxCachedWithStore
	}
	if v.results == nil || len(v.results) >= limit {
		v.results = make(map[string]verificationEntry, min(limit, 1024))
	}
	v.results[key] = e
}

// verifySignatures runs every selecting policy's verification for the image and writes
// status.signatures and the SignatureVerified condition. It returns each verifying policy's outcome
// by name. A registry failure returns an error and leaves the last verdict in place.
func (r *ImageAttestationReconciler) verifySignatures(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry,
	rc *registry.Client, policies []v1alpha1.RepositoryPolicy) (map[string]*policy.SignatureOutcome, error) {
	// A registry that answers slowly (a body dripped byte by byte) must not hold a worker: past the
	// deadline the verification is a registry error, retried, and the last verdict stands.
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	digest, err := digestRef(reg, ia)
	if err != nil {
		return nil, err
	}
	outcomes := map[string]*policy.SignatureOutcome{}
	// On a registry with the referrers API, signatures stored as referrers are not tags, so the
	// listing does not see them change: one referrers GET per digest tells whether a stored result
	// still holds.
	referrers := "-"
	// unchanged confirms, once, after a fresh verification, that the referrers did not change while
	// it ran: a result is stored under the fingerprint it was computed from, or not at all.
	unchanged := func() bool { return true }
	if needsVerification(policies) && !rc.NoReferrersAPI() {
		platforms := make([]string, 0, len(ia.Spec.Platforms))
		for _, p := range ia.Spec.Platforms {
			platforms = append(platforms, p.Digest)
		}
		var confirmed *bool
		unchanged = func() bool {
			if confirmed == nil {
				again, err := verify.ReferrersFingerprint(ctx, digest, platforms, rc.RemoteOptions()...)
				same := err == nil && again == referrers
				confirmed = &same
			}
			return *confirmed
		}
		fp, err := verify.ReferrersFingerprint(ctx, digest, platforms, rc.RemoteOptions()...)
		switch {
		case err == nil:
			referrers = fp
			r.verification.sawReferrers(ia.Spec.Digest, fp)
		default:
			// A referrers endpoint that fails for a moment (429, 5xx) does not void the stored
			// results: the last fingerprint stands for a Registry interval.
			last, ok := r.verification.lastReferrers(ia.Spec.Digest, registryInterval(reg))
			if !ok {
				rc.Forget(err)
				return nil, err
			}
			referrers = last
		}
	}
	var results []v1alpha1.SignatureResult
	var failures []string
	required := 0
	for i := range policies {
		p := &policies[i]
		if p.Spec.Verification == nil {
			continue
		}
		required++
		res, err := r.verifyWithPolicy(ctx, p, digest, ia, rc, referrers, unchanged, recheckAfter(p.Spec.Verification, reg))
		if err != nil {
			var stall policyError
			if errors.As(err, &stall) {
				failures = append(failures, fmt.Sprintf("%s: %s", p.Name, stall.msg))
				results = append(results, v1alpha1.SignatureResult{Policy: p.Name, Reason: v1alpha1.PolicyInvalidReason, Message: truncate(stall.msg, 1000)})
				outcomes[p.Name] = &policy.SignatureOutcome{Reasons: []string{policy.ReasonPolicyInvalid}}
				continue
			}
			return nil, err
		}
		outcomes[p.Name] = &policy.SignatureOutcome{Verified: res.Verified, Reasons: failureReasons(res, p.Spec.Verification)}
		outcomes[p.Name].VEX, outcomes[p.Name].VEXIgnored = vexOf(res)
		results = append(results, signatureResults(p.Name, res)...)
		if !res.Verified {
			failures = append(failures, fmt.Sprintf("%s: %s", p.Name, firstReason(res)))
		}
	}
	if len(results) > maxSignatureResults {
		results = results[:maxSignatureResults]
	}
	cond := metav1.Condition{Type: v1alpha1.SignatureVerifiedCondition, ObservedGeneration: ia.Generation}
	switch {
	case required == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, notRequiredReason, "no selecting policy requires signatures"
	case len(failures) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, verifiedReason, fmt.Sprintf("verified for %d policies", required)
	default:
		cond.Status, cond.Reason = metav1.ConditionFalse, reasonOf(failures[0])
		cond.Message = truncate(strings.Join(failures, "; "), 1000)
	}
	changed := !slices.EqualFunc(ia.Status.Signatures, results, func(a, b v1alpha1.SignatureResult) bool { return a == b })
	old := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.SignatureVerifiedCondition)
	if old == nil || old.Status != cond.Status || old.Reason != cond.Reason || old.Message != cond.Message {
		changed = true
	}
	ia.Status.Signatures = results
	apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
	if changed {
		now := metav1.Now()
		ia.Status.LastVerifiedTime = &now
	}
	return outcomes, nil
}

// failureReasons lists the distinct reasons a result fails: the failing authorities' reasons when
// fewer than `require` verified, every failing attestation's reason, and for an index whose
// indexPolicy looks at its platforms (Platforms, Either) the platforms' reasons. Empty when the
// result verified.
func failureReasons(res verify.ImageResult, spec *v1alpha1.VerificationSpec) []string {
	if res.Verified {
		return nil
	}
	require := len(spec.Authorities)
	if spec.Require != nil {
		require = int(*spec.Require)
	}
	var out []string
	add := func(r verify.Result) {
		verified := 0
		for _, a := range r.Authorities {
			if a.Verified {
				verified++
			}
		}
		for _, a := range r.Authorities {
			if !a.Verified && verified < require && a.Reason != "" {
				out = append(out, a.Reason)
			}
		}
		for _, a := range r.Attestations {
			if !a.Verified && a.Reason != "" {
				out = append(out, a.Reason)
			}
		}
	}
	add(res.Result)
	if spec.IndexPolicy == v1alpha1.IndexPolicyIndex {
		return sortedUnique(out) // the platforms' results only inform: the index digest decides
	}
	for _, p := range res.Platforms {
		if !p.Result.Verified {
			add(p.Result)
		}
	}
	return sortedUnique(out)
}

// vexOf gathers the signed VEX documents of the image (the index's and its platforms'), once each,
// and the ignored ones.
func vexOf(res verify.ImageResult) (docs []policy.VEXDocument, ignored []string) {
	seen := map[string]bool{}
	add := func(r verify.Result) {
		for _, d := range r.VEX {
			if !seen[d.Source] {
				seen[d.Source] = true
				docs = append(docs, policy.VEXDocument{Source: d.Source, Authority: d.Authority, Document: d.Document})
			}
		}
		ignored = append(ignored, r.VEXIgnored...)
	}
	add(res.Result)
	for _, p := range res.Platforms {
		add(p.Result)
	}
	return docs, sortedUnique(ignored)
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// policyError is a policy whose verification cannot be compiled (its own status says Stalled).
type policyError struct{ msg string }

func (e policyError) Error() string { return e.msg }

// verifyWithPolicy verifies the image against one policy, from the cache when fresh.
func (r *ImageAttestationReconciler) verifyWithPolicy(ctx context.Context, p *v1alpha1.RepositoryPolicy, digest name.Digest,
	ia *v1alpha1.ImageAttestation, rc *registry.Client, referrers string, unchanged func() bool, maxAge time.Duration) (verify.ImageResult, error) {
	material, o, ok, err := readMaterial(ctx, r.APIReader, p.Namespace, p.Spec.Verification)
	if err != nil {
		return verify.ImageResult{}, err
	}
	if !ok {
		return verify.ImageResult{}, policyError{o.message}
	}
	// The verification spec's hash, not the policy generation: a change elsewhere in the policy (a
	// threshold, retention) re-evaluates the verdict from cached results instead of re-verifying.
	// The verifier holds keys only; the registry is reached through the client of this pass.
	// verify.Checks versions what a verification looks at: a result from an older Portcullis (one that
	// did not read sigstore bundles, say) is not reused.
	var vexAuthorities []string
	if p.Spec.Scanning != nil && p.Spec.Scanning.VEX != nil {
		vexAuthorities = p.Spec.Scanning.VEX.Authorities
	}
	key := fmt.Sprintf("%s/%s/%s/%s", p.UID, specHash(p.Spec.Verification), materialHash(material), verify.Checks)
	if len(vexAuthorities) > 0 {
		key += "/vex-" + specHash(vexAuthorities)
	}
	v, err := r.verification.verifier(key, func() (*verify.Verifier, error) {
		v, err := verify.Compile(p.Spec.Verification, material)
		if err == nil {
			err = v.WithVEX(vexAuthorities)
		}
		return v, err
	})
	if err != nil {
		return verify.ImageResult{}, policyError{err.Error()}
	}
	// The result stands while the digest's signature and attestation tags and its referrers are the
	// ones it was computed from, on the same registry.
	rkey := store.Key(ia.Spec.Digest, key, digest.String(), accessoriesHash(ia.Spec.Accessories), referrers)
	if res, ok := r.verification.cached(rkey, maxAge); ok {
		return res, nil
	}
	start := time.Now()
	res, err := v.With(knownOf(ia, rc), rc.RemoteOptions()...).VerifyImage(ctx, digest,
		registry.Manifest{MediaType: ia.Spec.MediaType}.IsIndex() || len(ia.Spec.Platforms) > 0, p.Spec.Verification.IndexPolicy)
	observeVerification(start, res.Verified, err)
	if err != nil {
		rc.Forget(err)
		return verify.ImageResult{}, err
	}
	if unchanged() {
		r.verification.put(ctx, rkey, res)
	}
	return res, nil
}

// verifyTimeout bounds the verification of one image against all its policies, registry requests
// included.
var verifyTimeout = 2 * time.Minute

// defaultRecheckInterval is spec.verification.recheckInterval's default.
const defaultRecheckInterval = 24 * time.Hour

// recheckAfter is how long a verification result stands for an unchanged digest (the same
// supply-chain tags and referrers): the policy's recheckInterval, default 24h. With
// signatureRepository, the signatures' tags live in a repository the listing does not read, so a
// change to them is not seen: the result then stands for at most the Registry's interval.
func recheckAfter(spec *v1alpha1.VerificationSpec, reg *v1alpha1.Registry) time.Duration {
	d := defaultRecheckInterval
	if spec.RecheckInterval != nil && spec.RecheckInterval.Duration > 0 {
		d = spec.RecheckInterval.Duration
	}
	if spec.SignatureRepository != "" {
		d = min(d, registryInterval(reg))
	}
	return d
}

// needsVerification reports whether one of the policies verifies signatures.
func needsVerification(policies []v1alpha1.RepositoryPolicy) bool {
	for i := range policies {
		if policies[i].Spec.Verification != nil {
			return true
		}
	}
	return false
}

// knownOf is what the last listing found of the image's supply-chain tags; nil when the
// ImageAttestation was not listed since accessories were recorded.
func knownOf(ia *v1alpha1.ImageAttestation, rc *registry.Client) *verify.Known {
	if ia.Spec.Accessories == nil {
		return nil
	}
	k := &verify.Known{Tags: make(map[string]bool, len(ia.Spec.Accessories.Tags)), NoReferrersAPI: rc.NoReferrersAPI()}
	for _, a := range ia.Spec.Accessories.Tags {
		k.Tags[a.Tag] = true
	}
	return k
}

// accessoriesHash names the supply-chain tags a verification saw ("-" when unknown).
func accessoriesHash(a *v1alpha1.Accessories) string {
	if a == nil {
		return "-"
	}
	var b strings.Builder
	for _, t := range a.Tags {
		b.WriteString(t.Tag + "@" + t.Digest + "\n")
	}
	return shortHash(b.String(), 16)
}

// signatureResults flattens a result into status entries: one per authority, one per attestation
// (authority "attestation/<name>"), with the level found signed for an index.
func signatureResults(policyName string, res verify.ImageResult) []v1alpha1.SignatureResult {
	var out []v1alpha1.SignatureResult
	for _, a := range res.Authorities {
		sr := v1alpha1.SignatureResult{Policy: policyName, Authority: a.Name, Verified: a.Verified,
			Signer: truncate(a.Signer, 1000), Issuer: truncate(a.Issuer, 1000), Reason: a.Reason, Message: truncate(a.Message, 1000)}
		if res.Level != verify.LevelNone && res.Level != verify.LevelImage {
			sr.Message = truncate(strings.TrimSpace(sr.Message+" (signed at level "+res.Level+")"), 1000)
		}
		out = append(out, sr)
	}
	for _, a := range res.Attestations {
		out = append(out, v1alpha1.SignatureResult{Policy: policyName, Authority: "attestation/" + a.Name, Verified: a.Verified,
			Signer: a.Authority, Reason: a.Reason, Message: truncate(a.Message, 1000)})
	}
	// For an index checked through its platforms, one row per platform and authority, so a user
	// sees which platform failed.
	for _, pr := range res.Platforms {
		for _, a := range pr.Result.Authorities {
			out = append(out, v1alpha1.SignatureResult{Policy: policyName, Authority: a.Name + "@" + pr.Platform, Verified: a.Verified,
				Signer: truncate(a.Signer, 1000), Issuer: truncate(a.Issuer, 1000), Reason: a.Reason,
				Message: truncate(strings.TrimSpace("platform "+pr.Digest+" "+a.Message), 1000)})
		}
	}
	return out
}

// firstReason is "Reason" of the first failing authority or attestation of a result.
func firstReason(res verify.ImageResult) string {
	for _, a := range res.Authorities {
		if !a.Verified {
			return a.Reason
		}
	}
	for _, a := range res.Attestations {
		if !a.Verified {
			return a.Reason
		}
	}
	for _, p := range res.Platforms {
		if !p.Result.Verified {
			return "Platform" + firstReason(verify.ImageResult{Result: p.Result})
		}
	}
	return "NotVerified"
}

// reasonOf extracts the reason from a "policy: Reason" failure line.
func reasonOf(failure string) string {
	if _, r, ok := strings.Cut(failure, ": "); ok && !strings.ContainsAny(r, " :") {
		return r
	}
	return v1alpha1.PolicyInvalidReason
}

// digestRef names the image digest on the Registry's host.
func digestRef(reg *v1alpha1.Registry, ia *v1alpha1.ImageAttestation) (name.Digest, error) {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil {
		return name.Digest{}, err
	}
	var opts []name.Option
	if strings.EqualFold(u.Scheme, "http") {
		opts = append(opts, name.Insecure)
	}
	return name.NewDigest(u.Host+"/"+ia.Spec.Repository+"@"+ia.Spec.Digest, opts...)
}

// selectingPolicies are the policies of the image's Registry that govern its repository and select at
// least one of its tags.
func selectingPolicies(all []v1alpha1.RepositoryPolicy, ia *v1alpha1.ImageAttestation) []v1alpha1.RepositoryPolicy {
	var out []v1alpha1.RepositoryPolicy
	for i := range all {
		if selects(policy.NewSelection(all[i:i+1]), ia) {
			out = append(out, all[i])
		}
	}
	return out
}

// selects reports whether sel selects one of ia's tags. It copies nothing: the policy controller
// calls it for every ImageAttestation of a Registry on each summary.
func selects(sel policy.Selection, ia *v1alpha1.ImageAttestation) bool {
	for _, tag := range ia.Spec.Tags {
		if sel.Tag(ia.Spec.Repository, tag) {
			return true
		}
	}
	return false
}

// referrersSeen is the last referrers fingerprint read for a digest.
type referrersSeen struct {
	fingerprint string
	at          time.Time
}

// sawReferrers records digest's referrers fingerprint.
func (v *verification) sawReferrers(digest, fp string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.referrers == nil || len(v.referrers) >= maxCachedResults {
		v.referrers = map[string]referrersSeen{}
	}
	v.referrers[digest] = referrersSeen{fp, time.Now()}
}

// lastReferrers is digest's last fingerprint when it was read within maxAge.
func (v *verification) lastReferrers(digest string, maxAge time.Duration) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.referrers[digest]
	return s.fingerprint, ok && time.Since(s.at) < maxAge
}
