import math


def prng(seed):
    state = [(seed & 0xFFFFFFFF) or 1]

    def random():
        state[0] = (state[0] * 1664525 + 1013904223) & 0xFFFFFFFF
        return state[0] / 4294967296

    return random


def main(args):
    random = prng(int(args["seed"]))
    n = int(args["nodes"])
    edges = [[] for _ in range(n)]
    for _ in range(int(args["edges"])):
        a = math.floor(random() * n)
        b = math.floor(random() * n)
        edges[a].append(b)
        edges[b].append(a)
    depth = [-1] * n
    depth[0] = 0
    queue = [0]
    q = 0
    while q < len(queue):
        v = queue[q]
        for nxt in edges[v]:
            if depth[nxt] < 0:
                depth[nxt] = depth[v] + 1
                queue.append(nxt)
        q += 1
    rank = [1 / n] * n
    for _ in range(int(args["iterations"])):
        nxt = [0.15 / n] * n
        for v in range(n):
            share = (0.85 * rank[v]) / max(1, len(edges[v]))
            for w in edges[v]:
                nxt[w] += share
        rank = nxt
    best = 0
    for v in range(1, n):
        if rank[v] > rank[best]:
            best = v
    return {
        "reached": len(queue),
        "maxDepth": max(depth),
        "topNode": best,
        "topRank": math.floor(rank[best] * 1e6 + 0.5) / 1e6,
    }
