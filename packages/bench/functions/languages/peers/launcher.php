<?php
// A minimal ActionLoop loop for the bare php peer (see launcher.py).
require $argv[1];
$out = fopen('php://fd/3', 'w');
if (getenv('__OW_WAIT_FOR_ACK')) {
    fwrite($out, "{\"ok\": true}\n");
    fflush($out);
}
while (($line = fgets(STDIN)) !== false) {
    $request = json_decode($line, true);
    fwrite($out, json_encode(main($request['value'] ?? [])) . "\n");
    fflush($out);
}
