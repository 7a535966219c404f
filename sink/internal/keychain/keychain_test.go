package keychain

import (
	"fmt"
	"testing"
)

func TestChain(t *testing.T) {
	t.Parallel()
	keys := []string{"a", "b", "", "a", "c", "b", "a", ""}
	c := New(len(keys))
	for i, k := range keys {
		if i == 4 {
			continue // failed before publishing: neither ready nor linked
		}
		c.Add(i, k)
	}
	if got, want := fmt.Sprint(c.Ready), "[0 1 2 7]"; got != want {
		t.Errorf("Ready = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(c.Next), "[3 5 -1 6 -1 -1 -1 -1]"; got != want {
		t.Errorf("Next = %s, want %s", got, want)
	}
}
