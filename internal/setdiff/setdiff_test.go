package setdiff

import (
	"slices"
	"testing"
)

func TestOf(t *testing.T) {
	added, removed := Of([]int{1, 2, 3, 3}, []int{3, 4, 5, 4})
	if !slices.Equal(added, []int{4, 5, 4}) || !slices.Equal(removed, []int{1, 2}) {
		t.Fatalf("added %v, removed %v", added, removed)
	}
	if a, r := Of[int](nil, nil); a != nil || r != nil {
		t.Fatal("empty lists differ")
	}
}
