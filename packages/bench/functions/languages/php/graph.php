<?php
function main(array $args): array
{
    $state = ((int) $args['seed']) & 0xFFFFFFFF;
    if ($state === 0) {
        $state = 1;
    }
    // 64-bit integers hold the product of two 32-bit values exactly.
    $random = function () use (&$state): float {
        $state = ($state * 1664525 + 1013904223) & 0xFFFFFFFF;
        return $state / 4294967296;
    };
    $n = (int) $args['nodes'];
    $edges = array_fill(0, $n, []);
    for ($e = 0, $m = (int) $args['edges']; $e < $m; $e++) {
        $a = (int) floor($random() * $n);
        $b = (int) floor($random() * $n);
        $edges[$a][] = $b;
        $edges[$b][] = $a;
    }
    $depth = array_fill(0, $n, -1);
    $depth[0] = 0;
    $queue = [0];
    for ($q = 0; $q < count($queue); $q++) {
        $v = $queue[$q];
        foreach ($edges[$v] as $next) {
            if ($depth[$next] < 0) {
                $depth[$next] = $depth[$v] + 1;
                $queue[] = $next;
            }
        }
    }
    $rank = array_fill(0, $n, 1 / $n);
    for ($it = 0, $iterations = (int) $args['iterations']; $it < $iterations; $it++) {
        $next = array_fill(0, $n, 0.15 / $n);
        for ($v = 0; $v < $n; $v++) {
            $share = (0.85 * $rank[$v]) / max(1, count($edges[$v]));
            foreach ($edges[$v] as $w) {
                $next[$w] += $share;
            }
        }
        $rank = $next;
    }
    $best = 0;
    for ($v = 1; $v < $n; $v++) {
        if ($rank[$v] > $rank[$best]) {
            $best = $v;
        }
    }
    return [
        'reached' => count($queue),
        'maxDepth' => max($depth),
        'topNode' => $best,
        'topRank' => floor($rank[$best] * 1e6 + 0.5) / 1e6,
    ];
}
