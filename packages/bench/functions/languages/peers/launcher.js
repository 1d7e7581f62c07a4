// A minimal ActionLoop loop for the bare node peer (see launcher.py); the function file assigns
// module.exports.main.
const fs = require('node:fs');
const readline = require('node:readline');
const { main } = require(require('node:path').resolve(process.argv[2]));
if (process.env.__OW_WAIT_FOR_ACK) fs.writeSync(3, '{"ok": true}\n');
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const request = JSON.parse(line);
  fs.writeSync(3, `${JSON.stringify(await main(request.value ?? {}))}\n`);
  fs.writeSync(1, 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n');
  fs.writeSync(2, 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n');
});
