package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RepositoryPages lists the catalog (`GET /v2/_catalog`) page by page and calls fn with each
// page's repositories as soon as the page arrives, so a caller can work on the first repositories
// while the rest are still being listed, and memory holds one page (plus the names seen, to drop
// repeats). It follows the registry's `Link: <...>; rel="next"` pages with the guards of
// Repositories (a repeated link or a page of nothing new fails with ErrInvalidResponse).
//
// after, when not empty, resumes a listing cut short: the first page is asked for with
// `last=<after>` (the catalog's paging parameter, as CNCF Distribution and Harbor implement it) and
// the walk goes on from there. A registry that ignores `last` (its first page starts at or before
// after) is listed from the start instead, so a resumed listing is never silently short. An error
// returned by fn stops the listing and is returned as it is.
func (c *Client) RepositoryPages(ctx context.Context, after string, fn func(repos []string) error) (err error) {
	const op = "listing the catalog"
	p, done, err := c.pull()
	if err != nil {
		return err
	}
	defer func() { err = done(err) }()
	if after != "" {
		first, err := remote.CatalogPage(c.reg, after, c.pageSize, append(c.RemoteOptions(), remote.WithContext(ctx))...)
		if err != nil {
			return classify(op, err)
		}
		if len(first) == 0 {
			return nil // nothing after it: the listing was complete
		}
		if first[0] > after {
			return c.pagesAfter(ctx, op, after, first, fn)
		}
		// The registry ignored `last`: list from the start.
	}
	pager, err := p.Catalogger(ctx, c.reg)
	if err != nil {
		return classify(op, err)
	}
	return walkPages(ctx, op, c.maxPages, pager.HasNext, pager.Next,
		func(p *remote.Catalogs) ([]string, string) { return p.Repos, p.Next }, fn)
}

// pagesAfter goes on with `last` paging from a first page asked for with last=after: each next page
// is asked for with the last name of the page before, until a short page. A page that does not move
// past the one before fails with ErrInvalidResponse.
func (c *Client) pagesAfter(ctx context.Context, op, after string, page []string, fn func([]string) error) error {
	seen := map[string]struct{}{}
	for pages := 1; ; pages++ {
		fresh := page[:0:0]
		for _, r := range page {
			if _, dup := seen[r]; !dup && r > after {
				seen[r] = struct{}{}
				fresh = append(fresh, r)
			}
		}
		if len(fresh) == 0 {
			return classify(op, fmt.Errorf("%w: the page after %q repeats earlier items only", ErrInvalidResponse, after))
		}
		if err := fn(fresh); err != nil {
			return err
		}
		if len(page) < c.pageSize {
			return nil
		}
		if c.maxPages > 0 && pages >= c.maxPages {
			return classify(op, fmt.Errorf("%w: more than %d pages", ErrInvalidResponse, c.maxPages))
		}
		after = page[len(page)-1]
		var err error
		if page, err = remote.CatalogPage(c.reg, after, c.pageSize, append(c.RemoteOptions(), remote.WithContext(ctx))...); err != nil {
			return classify(op, err)
		}
		if len(page) == 0 {
			return nil
		}
	}
}
