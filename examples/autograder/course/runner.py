# The course's test runner for Python submissions: runs every test_* function of tests.py against
# submission.py and reports each one. It runs inside the grading sandbox, with the submission.
import contextlib
import io
import time


def run_test(test):
    output = io.StringIO()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(output):
            test()
        passed, message = True, ''
    except BaseException as error:  # noqa: B036 - a failed assertion or the submission crashing
        passed, message = False, ('%s: %s' % (type(error).__name__, error))[:500]
    return {
        'name': test.__name__,
        'passed': passed,
        'message': message,
        'output': output.getvalue()[-4000:],
        'ms': round((time.perf_counter() - started) * 1000, 3),
    }


def main(args):
    try:
        import tests
    except BaseException as error:  # noqa: B036 - the submission does not even import
        return {'passed': 0, 'total': 0, 'tests': [], 'problem': ('%s: %s' % (type(error).__name__, error))[:1000]}
    results = [run_test(getattr(tests, name)) for name in sorted(dir(tests)) if name.startswith('test_')]
    return {'passed': sum(r['passed'] for r in results), 'total': len(results), 'tests': results}
