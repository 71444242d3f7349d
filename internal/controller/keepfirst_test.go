package controller

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKeepFirst: the bounded selection keeps exactly the k smallest values, sorted, whatever the
// order they arrive in (duplicates included).
func TestKeepFirst(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 5, 10, 11, 500} {
		for _, k := range []int{1, 3, 10} {
			var all, kept []int
			for range n {
				v := r.IntN(50)
				all = append(all, v)
				kept = keepFirst(kept, v, k, cmp.Compare[int])
			}
			slices.Sort(all)
			want := all[:min(len(all), k)]
			if !slices.Equal(kept, want) {
				t.Errorf("n=%d k=%d: kept %v, want %v", n, k, kept, want)
			}
		}
	}
}
