// /whisk.system/utils/echo: returns its parameters as they came.
function main(params) {
  return params;
}

exports.main = main;
