def is_prime(n):
    return n > 1 and all(n % d for d in range(2, n))


def gcd(a, b):
    # Forgets that gcd(a, 0) is a.
    while a != b:
        if a == 0 or b == 0:
            return 0
        a, b = (a - b, b) if a > b else (a, b - a)
    return a
