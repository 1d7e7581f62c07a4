<?php
function main(array $args): array
{
    $name = $args['name'] ?? '';
    return ['greeting' => 'Hello ' . ($name === '' ? 'world' : $name)];
}
