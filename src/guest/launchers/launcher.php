<?php
// Isola's ActionLoop launcher for PHP functions.
//
// Loads the function from index.php beside this file (and vendor/autoload.php when there is one),
// then serves activations: one JSON line in on stdin, one JSON line out on fd 3, and the
// end-of-activation sentinel on stdout and stderr after each.
// Usage: php -d display_errors=stderr launcher.php <function name>
//
// Started ahead of its function (a blank sandbox's runtime, __ISOLA_WAIT_FOR_LOAD set), it waits
// for a line {"__isola": "load", "dir": ..., "args": [<function name>], "env": {...}} on stdin and
// loads the function from that directory instead.

const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';

$results = fopen('php://fd/3', 'w');

function __isola_reseed(array $request, $results): void
{
    // A snapshot clone: every clone would otherwise draw the same numbers.
    $entropy = base64_decode($request['entropy'] ?? '') . random_bytes(8);
    mt_srand(unpack('q', substr(hash('sha256', $entropy, true), 0, 8))[1]);
    fwrite($results, "{\"ok\": true}\n");
    fflush($results);
}

$here = __DIR__;
$name = $argv[1] ?? 'main';
if (getenv('__ISOLA_WAIT_FOR_LOAD')) {
    putenv('__ISOLA_WAIT_FOR_LOAD');
    $loaded = false;
    while (($raw = fgets(STDIN)) !== false) {
        $request = json_decode($raw, true);
        if (($request['__isola'] ?? null) === 'reseed') {
            __isola_reseed($request, $results);
        } elseif (($request['__isola'] ?? null) === 'load') {
            $here = $request['dir'];
            chdir($here);
            foreach ($request['env'] ?? [] as $key => $value) {
                putenv("$key=$value");
                $_ENV[$key] = $value;
                $_SERVER[$key] = $value;
            }
            $name = $request['args'][0] ?? 'main';
            $loaded = true;
            break;
        }
    }
    if (!$loaded) {
        exit(0);
    }
}

try {
    if (file_exists($here . '/vendor/autoload.php')) {
        require $here . '/vendor/autoload.php';
    }
    require $here . '/index.php';
    if (!function_exists($name)) {
        throw new Error("The function has no entry point \"$name\": define function $name(array \$args): array in index.php.");
    }
} catch (Throwable $e) {
    fwrite(STDERR, $e . "\n");
    exit(1);
}

if (getenv('__OW_WAIT_FOR_ACK')) {
    fwrite($results, "{\"ok\": true}\n");
    fflush($results);
}

/** JSON for a result: an empty PHP array is an empty dictionary, not an empty list. */
function encode_result($result): string
{
    if ($result === []) {
        return '{}';
    }
    $json = json_encode($result, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
    if ($json === false) {
        return json_encode(['error' => 'The result is not JSON: ' . json_last_error_msg()]);
    }
    return $json;
}

while (($raw = fgets(STDIN)) !== false) {
    if (trim($raw) === '') {
        continue;
    }
    $request = json_decode($raw, true);
    if (($request['__isola'] ?? null) === 'reseed') {
        __isola_reseed($request, $results);
        continue;
    }
    foreach ($request as $key => $value) {
        if ($key === 'value') {
            continue;
        }
        $text = is_string($value) ? $value : json_encode($value);
        $env = '__OW_' . strtoupper($key);
        putenv("$env=$text");
        $_ENV[$env] = $text;
        $_SERVER[$env] = $text;
    }
    $args = is_array($request['value'] ?? null) ? $request['value'] : [];
    try {
        $line = encode_result($name($args));
    } catch (Throwable $e) {
        fwrite(STDERR, $e . "\n");
        $message = $e->getMessage();
        $line = json_encode(['error' => $message !== '' ? $message : get_class($e)], JSON_UNESCAPED_UNICODE);
    }
    fflush(STDOUT);
    fflush(STDERR);
    fwrite($results, $line . "\n");
    fflush($results);
    echo SENTINEL, "\n";
    fwrite(STDERR, SENTINEL . "\n");
}
