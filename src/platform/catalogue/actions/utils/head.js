// /whisk.system/utils/head: the first `num` lines of an array (one when `num` is not given).
function main(params) {
  const lines = params.lines ?? [];
  if (!Array.isArray(lines)) return { error: "The parameter 'lines' must be an array of strings." };
  // As OpenWhisk's: a missing (or zero) num means one line.
  const num = params.num || 1;
  if (!/^\d+$/.test(String(num))) return { error: "The parameter 'num' must be a positive integer." };
  return { lines: lines.slice(0, Number(num)), num: Number(num) };
}

exports.main = main;
