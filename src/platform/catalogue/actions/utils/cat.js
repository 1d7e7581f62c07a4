// /whisk.system/utils/cat: joins an array of lines into one string, like the Unix cat.
// Everything else in the input is dropped.
function main(params) {
  const lines = params.lines ?? [];
  if (!Array.isArray(lines)) return { error: "The parameter 'lines' must be an array of strings or numbers." };
  return { lines, payload: lines.join('\n') };
}

exports.main = main;
