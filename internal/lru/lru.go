// Package lru is a least-recently-used cache bounded by a total cost (such
// as entries held), safe for concurrent use.
package lru

import (
	"container/list"
	"sync"
)

// Cache maps keys to values, evicting the least recently used once the
// total cost exceeds the budget.
type Cache[K comparable, V any] struct {
	mu     sync.Mutex
	budget int
	cost   int
	ll     *list.List
	items  map[K]*list.Element
	costOf func(V) int
}

type item[K comparable, V any] struct {
	key  K
	val  V
	cost int
}

// New returns a cache holding values of total cost at most budget. costOf
// may be nil (every value costs 1).
func New[K comparable, V any](budget int, costOf func(V) int) *Cache[K, V] {
	if costOf == nil {
		costOf = func(V) int { return 1 }
	}
	return &Cache[K, V]{budget: budget, ll: list.New(), items: map[K]*list.Element{}, costOf: costOf}
}

// Get returns the value of k and marks it recently used.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*item[K, V]).val, true
	}
	var zero V
	return zero, false
}

// Put stores a value. A value costing more than the whole budget is not
// stored.
func (c *Cache[K, V]) Put(k K, v V) {
	cost := max(c.costOf(v), 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		it := el.Value.(*item[K, V])
		c.cost += cost - it.cost
		it.val, it.cost = v, cost
		c.ll.MoveToFront(el)
	} else {
		if cost > c.budget {
			return
		}
		c.items[k] = c.ll.PushFront(&item[K, V]{k, v, cost})
		c.cost += cost
	}
	for c.cost > c.budget {
		el := c.ll.Back()
		it := el.Value.(*item[K, V])
		c.ll.Remove(el)
		delete(c.items, it.key)
		c.cost -= it.cost
	}
}

// Remove drops k.
func (c *Cache[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.Remove(el)
		delete(c.items, k)
		c.cost -= el.Value.(*item[K, V]).cost
	}
}

// Len is the number of cached values.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// Cost is the total cost of the cached values (at most the budget).
func (c *Cache[K, V]) Cost() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cost
}
