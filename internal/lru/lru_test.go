package lru

import "testing"

func TestEvictsByCost(t *testing.T) {
	c := New[int, []int](10, func(v []int) int { return len(v) })
	c.Put(1, make([]int, 4))
	c.Put(2, make([]int, 4))
	c.Get(1) // 2 is now the least recently used
	c.Put(3, make([]int, 4))
	if _, ok := c.Get(2); ok {
		t.Fatal("2 should have been evicted")
	}
	if _, ok := c.Get(1); !ok {
		t.Fatal("1 was evicted though recently used")
	}
	c.Put(4, make([]int, 11))
	if _, ok := c.Get(4); ok {
		t.Fatal("a value above the budget was stored")
	}
	if c.Cost() != 8 {
		t.Fatalf("cost = %d, want 8", c.Cost())
	}
	c.Put(1, make([]int, 1))
	c.Remove(3)
	if c.Len() != 1 || c.Cost() != 1 {
		t.Fatalf("len = %d, cost = %d", c.Len(), c.Cost())
	}
}
