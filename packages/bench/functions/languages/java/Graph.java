import com.google.gson.JsonObject;

public class Graph {
  public static JsonObject main(JsonObject args) {
    long[] state = {Integer.toUnsignedLong(args.get("seed").getAsInt())};
    if (state[0] == 0) state[0] = 1;
    int n = args.get("nodes").getAsInt();
    int m = args.get("edges").getAsInt();
    int[] from = new int[m];
    int[] to = new int[m];
    int[] degree = new int[n];
    for (int e = 0; e < m; e++) {
      from[e] = (int) Math.floor(next(state) * n);
      to[e] = (int) Math.floor(next(state) * n);
      degree[from[e]]++;
      degree[to[e]]++;
    }
    // Adjacency lists in one array, each list in the order the edges were drawn.
    int[] start = new int[n + 1];
    for (int v = 0; v < n; v++) start[v + 1] = start[v] + degree[v];
    int[] fill = new int[n];
    int[] adjacent = new int[2 * m];
    for (int e = 0; e < m; e++) {
      adjacent[start[from[e]] + fill[from[e]]++] = to[e];
      adjacent[start[to[e]] + fill[to[e]]++] = from[e];
    }
    int[] depth = new int[n];
    java.util.Arrays.fill(depth, -1);
    depth[0] = 0;
    int[] queue = new int[n];
    int length = 1;
    for (int q = 0; q < length; q++) {
      int v = queue[q];
      for (int i = start[v]; i < start[v + 1]; i++) {
        int next = adjacent[i];
        if (depth[next] < 0) {
          depth[next] = depth[v] + 1;
          queue[length++] = next;
        }
      }
    }
    double[] rank = new double[n];
    java.util.Arrays.fill(rank, 1.0 / n);
    int iterations = args.get("iterations").getAsInt();
    for (int it = 0; it < iterations; it++) {
      double[] next = new double[n];
      java.util.Arrays.fill(next, 0.15 / n);
      for (int v = 0; v < n; v++) {
        double share = (0.85 * rank[v]) / Math.max(1, degree[v]);
        for (int i = start[v]; i < start[v + 1]; i++) next[adjacent[i]] += share;
      }
      rank = next;
    }
    int best = 0;
    for (int v = 1; v < n; v++) if (rank[v] > rank[best]) best = v;
    int maxDepth = -1;
    for (int d : depth) maxDepth = Math.max(maxDepth, d);
    JsonObject result = new JsonObject();
    result.addProperty("reached", length);
    result.addProperty("maxDepth", maxDepth);
    result.addProperty("topNode", best);
    result.addProperty("topRank", Math.floor(rank[best] * 1e6 + 0.5) / 1e6);
    return result;
  }

  private static double next(long[] state) {
    state[0] = (state[0] * 1664525L + 1013904223L) & 0xFFFFFFFFL;
    return state[0] / 4294967296.0;
  }
}
