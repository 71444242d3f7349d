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
	if r.AppliedElsewhere != "" {
		fmt.Fprintf(w, "Retention: the applied policy plans retention on Registry %s; moved, its plan there would stop.\n", r.AppliedElsewhere)
	}
	if r.Skipped != "" {
		fmt.Fprintf(w, "Retention: not previewed: %s.\n", r.Skipped)
		return
	}
	switch {
	case !r.Planned && r.AppliedElsewhere == "":
		fmt.Fprintln(w, "Retention: the policy in the file has none; the applied policy's plan would stop.")
	case !r.Planned:
		return
	case r.Deletes:
		fmt.Fprintf(w, "Retention (mode Enforce, dryRun false: the manager would delete, at most %d digests per pass):\n", r.MaxDeletionsPerPass)
	default:
		fmt.Fprintf(w, "Retention (%s: the manager would only report the plan in status.retention):\n", r.Holds)
	}
	if r.Planned {
		fmt.Fprintf(w, "%s in %s: %d would be deleted, %d kept.\n", plural(r.ToDelete+r.Kept, "digest"), plural(r.Repositories, "repository"), r.ToDelete, r.Kept)
	}
	switch {
	case r.NowToDelete == nil:
		fmt.Fprintln(w, "The applied policy has no retention here.")
	case r.NowDeletes:
		fmt.Fprintf(w, "The applied policy deletes %d (mode Enforce, dryRun false).\n", *r.NowToDelete)
	default:
		fmt.Fprintf(w, "The applied policy plans %s (%s: it deletes nothing).\n", plural(*r.NowToDelete, "deletion"), r.NowHolds)
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
			changing := 0
			for _, d := range r.Digests[maxRetentionRows:] {
				if d.Now != d.WouldBe {
					changing++
				}
			}
			fmt.Fprintf(w, "... and %d more, %d of them changing (-o json lists them all).\n", n, changing)
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

// plural is "1 digest", "2 digests", "3 repositories".
func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
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
