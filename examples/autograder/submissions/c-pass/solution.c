int is_prime(long n) {
  if (n < 2) return 0;
  for (long d = 2; d * d <= n; d++)
    if (n % d == 0) return 0;
  return 1;
}

long gcd(long a, long b) { return b == 0 ? a : gcd(b, a % b); }
