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
    fwrite(STDOUT, "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n");
    fwrite(STDERR, "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n");
}
