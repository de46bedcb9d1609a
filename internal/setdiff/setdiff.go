// Package setdiff compares two lists as sets, in linear time.
package setdiff

// Of returns the items of after that are not in before (added) and the items
// of before that are not in after (removed), each in its list's order.
func Of[T comparable](before, after []T) (added, removed []T) {
	in := make(map[T]bool, len(before))
	for _, x := range before {
		in[x] = true
	}
	for _, x := range after {
		if !in[x] {
			added = append(added, x)
		}
		delete(in, x)
	}
	for _, x := range before {
		if in[x] {
			removed = append(removed, x)
		}
	}
	return added, removed
}
