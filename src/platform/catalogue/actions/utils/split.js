// /whisk.system/utils/split: splits a string into an array of lines at `separator` (a newline by default).
function main(params) {
  const payload = params.payload;
  if (typeof payload !== 'string') return { error: "The parameter 'payload' must be a string." };
  const separator = params.separator ?? '\n';
  if (typeof separator !== 'string') return { error: "The parameter 'separator' must be a string." };
  return { lines: payload.split(separator), payload };
}

exports.main = main;
