// /whisk.system/utils/smash: nests all the other parameters under the property named by `$fieldName`.
function main(params) {
  const { $fieldName: field, ...rest } = params;
  if (typeof field !== 'string') return { error: "Expected an argument '$fieldName' of type 'string'." };
  return { [field]: rest };
}

exports.main = main;
