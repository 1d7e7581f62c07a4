package main

import "math"

func number(args map[string]interface{}, key string) int {
	value, _ := args[key].(float64)
	return int(value)
}

func Main(args map[string]interface{}) map[string]interface{} {
	state := uint32(number(args, "seed"))
	if state == 0 {
		state = 1
	}
	random := func() float64 {
		state = state*1664525 + 1013904223
		return float64(state) / 4294967296
	}
	n := number(args, "nodes")
	edges := make([][]int, n)
	for e := number(args, "edges"); e > 0; e-- {
		a := int(math.Floor(random() * float64(n)))
		b := int(math.Floor(random() * float64(n)))
		edges[a] = append(edges[a], b)
		edges[b] = append(edges[b], a)
	}
	depth := make([]int, n)
	for i := range depth {
		depth[i] = -1
	}
	depth[0] = 0
	queue := []int{0}
	for q := 0; q < len(queue); q++ {
		v := queue[q]
		for _, next := range edges[v] {
			if depth[next] < 0 {
				depth[next] = depth[v] + 1
				queue = append(queue, next)
			}
		}
	}
	rank := make([]float64, n)
	for i := range rank {
		rank[i] = 1 / float64(n)
	}
	for it := number(args, "iterations"); it > 0; it-- {
		next := make([]float64, n)
		for i := range next {
			next[i] = 0.15 / float64(n)
		}
		for v := 0; v < n; v++ {
			degree := len(edges[v])
			if degree < 1 {
				degree = 1
			}
			share := (0.85 * rank[v]) / float64(degree)
			for _, w := range edges[v] {
				next[w] += share
			}
		}
		rank = next
	}
	best := 0
	for v := 1; v < n; v++ {
		if rank[v] > rank[best] {
			best = v
		}
	}
	maxDepth := -1
	for _, d := range depth {
		if d > maxDepth {
			maxDepth = d
		}
	}
	return map[string]interface{}{
		"reached":  len(queue),
		"maxDepth": maxDepth,
		"topNode":  best,
		"topRank":  math.Floor(rank[best]*1e6+0.5) / 1e6,
	}
}
