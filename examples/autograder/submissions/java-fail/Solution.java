public class Solution {
  public static boolean isPrime(long n) {
    // Takes every odd number for a prime.
    return n == 2 || n % 2 == 1;
  }

  public static long gcd(long a, long b) {
    return b == 0 ? a : gcd(b, a % b);
  }
}
