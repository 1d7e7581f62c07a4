"""Isola's ActionLoop launcher for Python functions.

Loads the function from __main__.py beside this file (as a module, not run as a script), then
serves activations: one JSON line in on stdin, one JSON line out on fd 3, and the end-of-activation
sentinel on stdout and stderr after each. Usage: python3 -u launcher.py <function name>

Started ahead of its function (a blank sandbox's runtime, __ISOLA_WAIT_FOR_LOAD set), it waits for
a line {"__isola": "load", "dir": ..., "args": [<function name>], "env": {...}} on stdin and loads
the function from that directory instead: the interpreter's start is then paid before the call.
"""
import base64
import glob
import importlib.util
import json
import os
import random
import sys
import traceback

SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX'
HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, here):
    # OpenWhisk's layout: dependencies in virtualenv/lib/python3.X/site-packages.
    for site in sorted(glob.glob(os.path.join(here, 'virtualenv', 'lib', 'python3*', 'site-packages'))):
        sys.path.insert(0, site)
    sys.path.insert(0, here)
    spec = importlib.util.spec_from_file_location('main__', os.path.join(here, '__main__.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules['main__'] = module
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise LookupError('The function has no entry point "%s": define def %s(args) in __main__.py.' % (name, name))
    return function


def finish_activation():
    sys.stdout.write(SENTINEL + '\n')
    sys.stdout.flush()
    sys.stderr.write(SENTINEL + '\n')
    sys.stderr.flush()


def message_of(error):
    text = str(error)
    return text if text else type(error).__name__


def reseed(request, results):
    # A snapshot clone: every clone would otherwise draw the same numbers.
    random.seed(base64.b64decode(request.get('entropy', '')) + os.urandom(16))
    results.write('{"ok": true}\n')
    results.flush()


def requests():
    """The JSON lines on stdin, until it ends."""
    while True:
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        if raw.strip():
            yield json.loads(raw.decode('utf-8'))


def wait_for_load(results):
    """A runtime started ahead: the directory and function name it is told to load."""
    for request in requests():
        if request.get('__isola') == 'reseed':
            reseed(request, results)
        elif request.get('__isola') == 'load':
            here = request['dir']
            os.chdir(here)
            os.environ.update(request.get('env') or {})
            args = request.get('args') or []
            return here, args[0] if args else 'main'
    sys.exit(0)


def serve(function, results):
    for request in requests():
        if request.get('__isola') == 'reseed':
            reseed(request, results)
            continue
        for key, value in request.items():
            if key != 'value':
                os.environ['__OW_' + key.upper()] = value if isinstance(value, str) else json.dumps(value)
        args = request.get('value')
        try:
            result = function(args if isinstance(args, dict) else {})
            line = json.dumps(result, ensure_ascii=False, allow_nan=False)
        except BaseException as error:  # noqa: B036 - whatever the function raises ends only its activation
            if isinstance(error, SystemExit):
                raise
            traceback.print_exc()
            line = json.dumps({'error': message_of(error)}, ensure_ascii=False)
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(line + '\n')
        results.flush()
        finish_activation()


def main():
    sys.stdout.reconfigure(encoding='utf-8', errors='backslashreplace')
    sys.stderr.reconfigure(encoding='utf-8', errors='backslashreplace')
    results = os.fdopen(3, 'w', encoding='utf-8')
    if os.environ.pop('__ISOLA_WAIT_FOR_LOAD', None):
        here, name = wait_for_load(results)
    else:
        here, name = HERE, sys.argv[1] if len(sys.argv) > 1 else 'main'
    try:
        function = load(name, here)
    except BaseException:  # noqa: B036 - a load failure of any kind is reported and ends the process
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    if os.environ.get('__OW_WAIT_FOR_ACK'):
        results.write('{"ok": true}\n')
        results.flush()
    serve(function, results)


if __name__ == '__main__':
    main()
