// /whisk.system/utils/namespace: the namespace this action runs for, from __OW_NAMESPACE.
function main() {
  // Sandboxes without Node.js APIs (isolation "isolate") have no process environment.
  const env = typeof process === 'object' && process?.env ? process.env : {};
  if (!env.__OW_NAMESPACE) return { error: 'The namespace is unknown: __OW_NAMESPACE is not set in this sandbox.' };
  return { namespace: env.__OW_NAMESPACE };
}

exports.main = main;
