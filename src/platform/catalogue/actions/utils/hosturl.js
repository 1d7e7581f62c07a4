// /whisk.system/utils/hosturl: the URL that invokes an action or fires a trigger of this
// namespace (or a web action's URL), built from the API host in __OW_API_HOST.
//   path: `action` or `package/action`; web: true for a web action's URL;
//   ext: a web action's extension; trigger: true for a trigger's URL.
const WEB_EXTENSIONS = ['.html', '.http', '.json', '.svg', '.text'];

function main(params) {
  // Sandboxes without Node.js APIs (isolation "isolate") have no process environment.
  const env = typeof process === 'object' && process?.env ? process.env : {};
  const host = env.__OW_API_HOST;
  const namespace = env.__OW_NAMESPACE;
  if (!host || !namespace) return { error: 'The API host is unknown: __OW_API_HOST is not set in this sandbox.' };
  const web = params.web === true;
  const path = params.path;
  if (path !== undefined && typeof path !== 'string') return { error: "The parameter 'path' must be a string." };
  if (web && params.trigger) return { error: 'triggers are not allowed for web actions.' };
  if (web && params.ext && !WEB_EXTENSIONS.includes(params.ext)) {
    return { error: `extension for web action must be one of [${WEB_EXTENSIONS.map((e) => `"${e}"`).join(', ')}].` };
  }
  if (!web && params.trigger && path?.includes('/')) return { error: 'triggers are not allowed in packages.' };

  const collection = params.trigger === true ? 'triggers' : 'actions';
  const base = web ? `${host}/api/v1/web/${namespace}` : `${host}/api/v1/namespaces/${namespace}/${collection}`;
  if (!path) return { url: base };
  // A web action outside a package is in the package `default`.
  const qualified = web && !path.includes('/') ? `default/${path}` : path;
  return { url: `${base}/${qualified}${web ? (params.ext ?? '') : ''}` };
}

exports.main = main;
