package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

type rec struct {
	IDs []string
	N   int
}

// TestPutGetReopen: records survive closing and reopening the file (a manager restart).
func TestPutGetReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k := Key("sha256:aa", "db1")
	if err := s.Put(Scans, k, rec{IDs: []string{"CVE-1", "CVE-2"}, N: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got rec
	if ok, err := s.Get(Scans, k, &got); !ok || err != nil || got.N != 3 || len(got.IDs) != 2 {
		t.Fatalf("Get = %v, %v, %+v", ok, err, got)
	}
	if ok, _ := s.Get(Verifications, k, &got); ok {
		t.Fatal("buckets must be separate")
	}
	if ok, _ := s.Get(Scans, Key("sha256:bb", "db1"), &got); ok {
		t.Fatal("absent key found")
	}
}

// TestPrune drops exactly the records of digests no longer kept, in every bucket, including runs
// of adjacent keys.
func TestPrune(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() { // concurrent writers share batches
			defer wg.Done()
			d := fmt.Sprintf("sha256:%03d", i)
			for _, b := range []string{Scans, Verifications} {
				for _, part := range []string{"x", "y"} {
					if err := s.Put(b, Key(d, part), rec{N: i}); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	keep := func(d string) bool { var n int; _, _ = fmt.Sscanf(d, "sha256:%d", &n); return n%3 == 0 }
	n, err := s.Prune(keep)
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 * (100 - 34); n != want {
		t.Fatalf("pruned %d, want %d", n, want)
	}
	if s.Len(Scans) != 2*34 || s.Len(Verifications) != 2*34 {
		t.Fatalf("left %d scans, %d verifications; want 68 each", s.Len(Scans), s.Len(Verifications))
	}
	var r rec
	if ok, _ := s.Get(Scans, Key("sha256:003", "y"), &r); !ok || r.N != 3 {
		t.Fatal("a kept record was pruned")
	}
	if ok, _ := s.Get(Scans, Key("sha256:004", "x"), &r); ok {
		t.Fatal("a dropped record is still there")
	}
}
