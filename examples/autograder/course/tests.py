# The assignment's tests: is_prime(n) and gcd(a, b).
from submission import gcd, is_prime


def test_small_primes():
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]


def test_large_prime():
    assert is_prime(1_000_003)
    assert not is_prime(1_000_001)


def test_gcd():
    assert gcd(12, 18) == 6
    assert gcd(17, 5) == 1


def test_gcd_zero():
    assert gcd(0, 9) == 9
    assert gcd(9, 0) == 9
