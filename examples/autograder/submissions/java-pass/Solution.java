public class Solution {
  public static boolean isPrime(long n) {
    if (n < 2) return false;
    for (long d = 2; d * d <= n; d++) if (n % d == 0) return false;
    return true;
  }

  public static long gcd(long a, long b) {
    return b == 0 ? a : gcd(b, a % b);
  }
}
