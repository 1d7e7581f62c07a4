// /whisk.system/utils/sort: sorts an array of lines (as strings, like Array.prototype.sort).
function main(params) {
  const lines = params.lines ?? [];
  if (!Array.isArray(lines)) return { error: "The parameter 'lines' must be an array of strings." };
  const sorted = [...lines].sort();
  return { lines: sorted, length: sorted.length };
}

exports.main = main;
