import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import { printJson, printTable } from '../output.js';
import { clientFor, globals } from './common.js';

const MANAGEMENT = '/api/v1/web/whisk.system/apimgmt';
const RESPONSE_TYPES = ['json', 'http', 'text', 'html', 'svg'];

interface SwaggerOperation {
  'x-openwhisk'?: { namespace: string; package: string; action: string; url: string };
}

interface ApiValue {
  namespace: string;
  gwApiActivated: boolean;
  tenantId: string;
  gwApiUrl: string;
  apidoc: {
    swagger: string;
    info: { title: string; version: string };
    basePath: string;
    paths: Record<string, Record<string, SwaggerOperation>>;
  };
}

interface ApiList {
  apis: { id: string; key: string; value: ApiValue }[];
}

/** Every operation of an API: the action it runs, its verb, the API's name and the URL to call. */
function operationsOf(api: ApiValue): { action: string; verb: string; name: string; url: string }[] {
  return Object.entries(api.apidoc.paths).flatMap(([path, operations]) =>
    Object.entries(operations).map(([verb, operation]) => {
      const ow = operation['x-openwhisk'];
      const action = ow ? `/${ow.namespace}/${ow.package ? `${ow.package}/` : ''}${ow.action}` : '';
      return { action, verb, name: api.apidoc.info.title, url: `${api.gwApiUrl}${path}` };
    }),
  );
}

function query(fields: Record<string, string | undefined>): string {
  const entries = Object.entries(fields).filter((e): e is [string, string] => e[1] !== undefined);
  return entries.length === 0 ? '' : `?${new URLSearchParams(entries).toString()}`;
}

function responseType(text: string): string {
  if (!RESPONSE_TYPES.includes(text)) throw new InvalidArgumentError(`It must be one of ${RESPONSE_TYPES.join(', ')}.`);
  return text;
}

/**
 * `isola api`, as `wsk api`: create, get, list and delete API gateway routes that expose web
 * actions at `/api/{namespace uuid}/{base path}/{path}`.
 */
export function registerApiCommands(program: Command): void {
  const api = program.command('api').description('create, get, list and delete API gateway routes to web actions');

  api
    .command('create [args...]')
    .usage('[BASE_PATH] API_PATH API_VERB ACTION | --config-file FILE')
    .description('expose a web action as a verb on a path (the base path defaults to /), or create an API from a swagger file')
    .option('-n, --apiname <name>', "the API's name (the base path when not given)")
    .option('--response-type <type>', `how the result is answered: ${RESPONSE_TYPES.join(', ')}`, responseType, 'json')
    .option('-c, --config-file <file>', 'a swagger document with x-openwhisk operations: the whole API')
    .action(
      async (args: string[], options: { apiname?: string; responseType: string; configFile?: string }, command: Command) => {
        let body: Record<string, unknown>;
        let summary: string;
        if (options.configFile !== undefined) {
          if (args.length > 0) throw new Error('Pass either --config-file or BASE_PATH API_PATH API_VERB ACTION, not both.');
          const swagger = readFileSync(options.configFile, 'utf8');
          body = { apidoc: { namespace: '_', swagger } };
          summary = `ok: created API from ${options.configFile}`;
        } else {
          if (args.length < 3 || args.length > 4)
            throw new Error('Usage: isola api create [BASE_PATH] API_PATH API_VERB ACTION (or --config-file FILE).');
          const [basePath, relPath, verb, action] = (args.length === 3 ? ['/', ...args] : args) as [
            string,
            string,
            string,
            string,
          ];
          body = {
            apidoc: {
              namespace: '_',
              gatewayBasePath: basePath,
              gatewayPath: relPath,
              gatewayMethod: verb,
              id: `API:_:${basePath}`,
              action: { name: action, namespace: '_', backendMethod: verb.toUpperCase() },
              ...(options.apiname !== undefined ? { apiName: options.apiname } : {}),
            },
          };
          summary = `ok: created API ${basePath === '/' ? '' : basePath}${relPath} ${verb.toUpperCase()} for action /_/${action}`;
        }
        const { data } = await clientFor(command).request<ApiValue>(
          'POST',
          `${MANAGEMENT}/createApi.http${query({ responsetype: options.responseType })}`,
          body,
        );
        if (globals(command).json) return printJson(data);
        process.stdout.write(`${summary}\n`);
        const relPath = options.configFile === undefined ? args[args.length === 3 ? 0 : 1] : undefined;
        for (const operation of operationsOf(data)) {
          if (relPath === undefined || operation.url === `${data.gwApiUrl}${relPath}`) process.stdout.write(`${operation.url}\n`);
        }
      },
    );

  api
    .command('get <basePathOrName>')
    .description("show an API's swagger document (by base path or name)")
    .action(async (basePathOrName: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<ApiList>(
        'GET',
        `${MANAGEMENT}/getApi.http${query({ basepath: basePathOrName })}`,
      );
      const found = data.apis[0];
      if (!found) throw new Error(`The API "${basePathOrName}" does not exist.`);
      printJson(found.value.apidoc);
    });

  api
    .command('list [basePathOrName] [apiPath] [apiVerb]')
    .description('list the API operations: action, verb, API name and URL')
    .action(
      async (
        basePathOrName: string | undefined,
        apiPath: string | undefined,
        apiVerb: string | undefined,
        _options,
        command: Command,
      ) => {
        const { data } = await clientFor(command).request<ApiList>(
          'GET',
          `${MANAGEMENT}/getApi.http${query({ basepath: basePathOrName, relpath: apiPath, operation: apiVerb })}`,
        );
        if (globals(command).json) return printJson(data);
        const rows = data.apis.flatMap((entry) => operationsOf(entry.value)).map((o) => [o.action, o.verb, o.name, o.url]);
        process.stdout.write('ok: APIs\n');
        // Not wrapped: the URLs are there to be copied whole.
        printTable(['Action', 'Verb', 'API Name', 'URL'], rows, Number.MAX_SAFE_INTEGER);
      },
    );

  api
    .command('delete <basePathOrName> [apiPath] [apiVerb]')
    .description('delete an API, the operations on one of its paths, or one operation')
    .action(
      async (basePathOrName: string, apiPath: string | undefined, apiVerb: string | undefined, _options, command: Command) => {
        const { data } = await clientFor(command).request(
          'DELETE',
          `${MANAGEMENT}/deleteApi.http${query({ basepath: basePathOrName, relpath: apiPath, operation: apiVerb })}`,
        );
        if (globals(command).json) return printJson(data);
        const what = apiPath === undefined ? '' : ` ${apiPath}${apiVerb ? ` ${apiVerb.toUpperCase()}` : ''}`;
        process.stdout.write(`ok: deleted API ${basePathOrName}${what}\n`);
      },
    );
}
