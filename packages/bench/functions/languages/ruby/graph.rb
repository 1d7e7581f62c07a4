def prng(seed)
  state = (seed & 0xFFFFFFFF)
  state = 1 if state.zero?
  lambda do
    state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
    state / 4294967296.0
  end
end

def main(args)
  random = prng(args["seed"].to_i)
  n = args["nodes"].to_i
  edges = Array.new(n) { [] }
  args["edges"].to_i.times do
    a = (random.call * n).floor
    b = (random.call * n).floor
    edges[a] << b
    edges[b] << a
  end
  depth = Array.new(n, -1)
  depth[0] = 0
  queue = [0]
  q = 0
  while q < queue.length
    v = queue[q]
    edges[v].each do |nxt|
      if depth[nxt] < 0
        depth[nxt] = depth[v] + 1
        queue << nxt
      end
    end
    q += 1
  end
  rank = Array.new(n, 1.0 / n)
  args["iterations"].to_i.times do
    nxt = Array.new(n, 0.15 / n)
    n.times do |v|
      share = (0.85 * rank[v]) / [1, edges[v].length].max
      edges[v].each { |w| nxt[w] += share }
    end
    rank = nxt
  end
  best = 0
  (1...n).each { |v| best = v if rank[v] > rank[best] }
  {
    "reached" => queue.length,
    "maxDepth" => depth.max,
    "topNode" => best,
    "topRank" => (rank[best] * 1e6 + 0.5).floor / 1e6
  }
end
