# A minimal ActionLoop loop for the bare python3 peer: loads the function file named on the
# command line, acks on fd 3, then answers one JSON line per request line and marks its end.
import importlib.util
import json
import os
import sys

spec = importlib.util.spec_from_file_location("function", sys.argv[1])
function = importlib.util.module_from_spec(spec)
spec.loader.exec_module(function)
out = os.fdopen(3, "w")
if os.environ.get("__OW_WAIT_FOR_ACK"):
    out.write('{"ok": true}\n')
    out.flush()
for line in sys.stdin:
    request = json.loads(line)
    out.write(json.dumps(function.main(request.get("value", {}))) + "\n")
    out.flush()
    # The end of the activation, on both streams, as OpenWhisk's launchers mark it.
    print("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", flush=True)
    print("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", file=sys.stderr, flush=True)
