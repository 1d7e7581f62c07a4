// /whisk.system/utils/date: the current date and time, as an ISO 8601 string.
function main() {
  return { date: new Date().toISOString() };
}

exports.main = main;
