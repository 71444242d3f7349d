package receiver

// batch is what a repository's deliveries asked for since a worker last took it, deduplicated: an
// event that arrives again while one like it waits is one event, and a tag pushed several times is
// resolved once (plan). Past maxBatch distinct events the batch collapses into one listing of the
// repository, which covers every push and delete in it.
type batch struct {
	events []Event
	seen   map[Event]struct{}
	// relist: list the repository once (a burst past maxBatch, or a listing that failed and is
	// retried). A batch that relists holds no events: the listing covers them.
	relist bool
}

// maxBatch is the most distinct events one repository's batch holds before it becomes one listing
// of the repository (one tags request and a HEAD per tag, instead of a HEAD per event).
const maxBatch = 256

// size is the number of events the batch counts for (a listing counts as one).
func (b *batch) size() int {
	if b.relist {
		return 1
	}
	return len(b.events)
}

// add adds e unless the batch holds it already or relists; it returns the change in size.
func (b *batch) add(e Event) int {
	if b.relist {
		return 0
	}
	if _, ok := b.seen[e]; ok {
		return 0
	}
	if len(b.events) >= maxBatch {
		return b.collapse()
	}
	if b.seen == nil {
		b.seen = map[Event]struct{}{}
	}
	b.seen[e] = struct{}{}
	b.events = append(b.events, e)
	return 1
}

// collapse makes b one listing of the repository; it returns the change in size.
func (b *batch) collapse() int {
	before := b.size()
	b.events, b.seen, b.relist = nil, nil, true
	return 1 - before
}

// merge adds other's events (or its listing) to b; it returns the change in size.
func (b *batch) merge(other *batch) int {
	if other.relist {
		if b.relist {
			return 0
		}
		return b.collapse()
	}
	n := 0
	for _, e := range other.events {
		n += b.add(e)
	}
	return n
}

// plan is the work a batch asks for, in arrival order: one step per event, except that pushes of
// the same tag are one step (the registry is asked what the tag points at now, so only the latest
// announced digest matters), and whether the repository is listed once at the end.
func (b *batch) plan() (steps []Event, relist bool) {
	if b.relist {
		return nil, true
	}
	pushed := map[string]int{} // tag → index in steps
	for _, e := range b.events {
		if e.Action == Push && e.Tag != "" {
			if i, ok := pushed[e.Tag]; ok {
				steps[i].Digest = e.Digest
				continue
			}
			pushed[e.Tag] = len(steps)
		}
		steps = append(steps, e)
	}
	return steps, false
}
