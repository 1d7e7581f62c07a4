/* The assignment's tests for C submissions (is_prime(long), gcd(long, long)). */
int is_prime(long n);
long gcd(long a, long b);

int test_small_primes(void) {
  long expected[] = {2, 3, 5, 7, 11, 13, 17, 19};
  int found = 0;
  for (long n = 0; n < 20; n++) {
    if (is_prime(n)) {
      if (found >= 8 || expected[found] != n) return 0;
      found++;
    }
  }
  return found == 8;
}
int test_large_prime(void) { return is_prime(1000003) && !is_prime(1000001); }
int test_gcd(void) { return gcd(12, 18) == 6 && gcd(17, 5) == 1; }
int test_gcd_zero(void) { return gcd(0, 9) == 9 && gcd(9, 0) == 9; }

struct test { const char *name; int (*run)(void); };
const struct test TESTS[] = {
  {"test_small_primes", test_small_primes},
  {"test_large_prime", test_large_prime},
  {"test_gcd", test_gcd},
  {"test_gcd_zero", test_gcd_zero},
};
const int TEST_COUNT = sizeof TESTS / sizeof TESTS[0];
