package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/portcullis-dev/portcullis/internal/policy"
)

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
	switch {
	case !r.Planned:
		fmt.Fprintln(w, "Retention: the policy in the file has none; the applied policy's plan would stop.")
	case r.Deletes:
		fmt.Fprintf(w, "Retention (mode Enforce, dryRun false: the manager would delete, at most %d digests per pass):\n", r.MaxDeletionsPerPass)
	default:
		fmt.Fprintln(w, "Retention (dry run: the manager would only report the plan in status.retention):")
	}
	if r.Planned {
		repos := "repositories"
		if r.Repositories == 1 {
			repos = "repository"
		}
		fmt.Fprintf(w, "%d digests in %d %s: %d would be deleted, %d kept.\n", r.ToDelete+r.Kept, r.Repositories, repos, r.ToDelete, r.Kept)
	}
	switch {
	case r.NowToDelete == nil:
		fmt.Fprintln(w, "The applied policy has no retention.")
	case r.NowDeletes:
		fmt.Fprintf(w, "The applied policy deletes %d (mode Enforce, dryRun false).\n", *r.NowToDelete)
	default:
		fmt.Fprintf(w, "The applied policy plans %d deletions in dry run (it deletes nothing).\n", *r.NowToDelete)
	}
	if len(r.Digests) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DIGEST\tTAGS\tCREATED\tNOW\tWOULD BE\tREASON")
		for _, d := range r.Digests[:min(len(r.Digests), maxRetentionRows)] {
			nowAction, wouldBe := orDash(d.Now), orDash(d.WouldBe)
			fmt.Fprintf(tw, "%s@%s\t%s\t%s\t%s\t%s\t%s\n", d.Repository, shortDigest(d.Digest), orDash(shortTags(d.Tags)), orDash(d.Created),
				nowAction, wouldBe, d.Reason)
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
