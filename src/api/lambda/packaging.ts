import { zipSync } from 'fflate';
import { IsolaError } from '../../core/errors.js';
import type { Kind } from '../../core/kinds.js';
import { assertEntryPoint } from '../../core/names.js';
import type { ActionVersion } from '../../core/types.js';
import { isZip, packZip, readZip, type ZipFile } from '../../platform/packages/zip.js';
import { invalidParameter } from './errors.js';

/** Lambda's runtimes that Isola runs, and the kind each becomes. */
export const RUNTIME_KINDS: Readonly<Record<string, Kind>> = {
  'nodejs20.x': 'nodejs:20',
  'nodejs18.x': 'nodejs:20',
  'python3.11': 'python:3',
  'python3.12': 'python:3',
  java17: 'java:17',
  'provided.al2023': 'native',
  'provided.al2': 'native',
};

/** The runtime an action of another door shows through the Lambda API. */
export const KIND_RUNTIMES: Readonly<Record<Kind, string>> = {
  'nodejs:20': 'nodejs20.x',
  'python:3': 'python3.12',
  'java:17': 'java17',
  'go:1.19': 'provided.al2023',
  'ruby:3.1': 'ruby3.2',
  'php:8.2': 'provided.al2023',
  native: 'provided.al2023',
  wasm: 'provided.al2023',
};

export function kindOfRuntime(runtime: string): Kind {
  if (!Object.hasOwn(RUNTIME_KINDS, runtime)) {
    throw invalidParameter(
      `Value ${runtime.slice(0, 40)} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [${Object.keys(RUNTIME_KINDS).join(', ')}]`,
    );
  }
  return RUNTIME_KINDS[runtime] as Kind;
}

/** What the action stores for a Lambda zip: its kind, its code (base64) and its entry point. */
export interface LambdaPackage {
  kind: Kind;
  code: string;
  main?: string;
}

/**
 * Turns a Lambda deployment package into an Isola exec. Lambda names the entry point with its
 * Handler, `file.export`; Isola's kinds find their module by convention (a Node.js zip's
 * package.json `main`, a Python zip's `__main__.py`), so the zip gets what points there.
 */
export async function lambdaPackage(runtime: string, handler: string, zipBase64: string): Promise<LambdaPackage> {
  const kind = kindOfRuntime(runtime);
  const bytes = Buffer.from(zipBase64, 'base64');
  if (bytes.length === 0 || !isZip(bytes)) {
    throw invalidParameter('Could not unzip uploaded file. Please check your file, then try to upload again.');
  }
  let files: ZipFile[];
  try {
    files = await readZip(bytes);
  } catch (error) {
    if (error instanceof IsolaError) throw invalidParameter(`Could not unzip uploaded file: ${error.message}`);
    throw error;
  }
  switch (kind) {
    case 'nodejs:20':
      return nodePackage(handler, files, zipBase64);
    case 'python:3':
      return pythonPackage(handler, files);
    case 'java:17':
      return { kind, code: zipBase64, main: javaMain(handler) };
    default:
      return customRuntimePackage(runtime, kind, handler, files, zipBase64);
  }
}

/**
 * `provided.al2023` / `provided.al2`: a zip with an executable `bootstrap` at its top runs as a
 * custom runtime, served Lambda's Runtime API in its sandbox, with the Handler as its `_HANDLER`.
 * A zip with `exec` instead speaks OpenWhisk's ActionLoop, as a native action does.
 */
function customRuntimePackage(runtime: string, kind: Kind, handler: string, files: ZipFile[], zipBase64: string): LambdaPackage {
  if (files.some((f) => f.path === 'exec')) return { kind, code: zipBase64 };
  if (!files.some((f) => f.path === 'bootstrap')) {
    throw invalidParameter(
      `A ${runtime} zip needs an executable "bootstrap" at its top (a custom runtime that uses the Lambda ` +
        'Runtime API), or an "exec" that speaks OpenWhisk\'s ActionLoop protocol.',
    );
  }
  if (!CUSTOM_HANDLER.test(handler)) {
    throw invalidParameter(
      `Handler "${handler.slice(0, 80)}" must be up to 128 letters, digits, '_', '.', '-', '/' or ':' (it becomes _HANDLER).`,
    );
  }
  return { kind, code: zipBase64, main: handler };
}

/** What a custom runtime's Handler may be: Lambda leaves its meaning to the runtime. */
const CUSTOM_HANDLER = /^[\w][\w.:/-]{0,127}$/;

function splitHandler(handler: string): { file: string; exported: string } {
  const at = handler.lastIndexOf('.');
  const file = at > 0 ? handler.slice(0, at) : '';
  const exported = handler.slice(at + 1);
  if (!file || !/^[\w./-]+$/.test(file) || file.split('/').includes('..')) {
    throw invalidParameter(`Handler "${handler.slice(0, 80)}" must be file.function, e.g. index.handler.`);
  }
  try {
    return { file, exported: assertEntryPoint(exported) };
  } catch {
    throw invalidParameter(`Handler "${handler.slice(0, 80)}" must end with the function's name, e.g. index.handler.`);
  }
}

/** `index.handler`: the module `index.js` (named in package.json when it is another), export `handler`. */
function nodePackage(handler: string, files: ZipFile[], zipBase64: string): LambdaPackage {
  const { file, exported } = splitHandler(handler);
  const module = ['.js', '.cjs', ''].map((ext) => `${file}${ext}`).find((path) => files.some((f) => f.path === path));
  if (!module) throw invalidParameter(`The zip has no ${file}.js for Handler "${handler.slice(0, 80)}".`);
  const manifest = files.find((f) => f.path === 'package.json');
  let parsed: Record<string, unknown> = {};
  if (manifest) {
    try {
      const value: unknown = JSON.parse(Buffer.from(manifest.data).toString('utf8'));
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) parsed = value as Record<string, unknown>;
    } catch {
      throw invalidParameter("The zip's package.json is not valid JSON.");
    }
  }
  const declared = typeof parsed.main === 'string' ? parsed.main.replace(/^\.\//, '') : manifest ? undefined : 'index.js';
  if (declared === module || (declared === undefined && module === 'index.js')) {
    return { kind: 'nodejs:20', code: zipBase64, main: exported };
  }
  const manifestData = Buffer.from(JSON.stringify({ ...parsed, main: module }, null, 2));
  const repacked = [...files.filter((f) => f.path !== 'package.json'), { path: 'package.json', data: manifestData, mode: 0 }];
  return { kind: 'nodejs:20', code: packZip(repacked).toString('base64'), main: exported };
}

/**
 * `lambda_function.lambda_handler`: a `__main__.py` that imports it and calls it as Lambda does,
 * `(event, context)`, with a context read from the activation's environment.
 */
function pythonPackage(handler: string, files: ZipFile[]): LambdaPackage {
  const { file, exported } = splitHandler(handler);
  const module = file.replace(/\//g, '.');
  if (module === '__main__') return { kind: 'python:3', code: packZip(files).toString('base64'), main: exported };
  if (!/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$/.test(module))
    throw invalidParameter(`Handler "${handler.slice(0, 80)}" must name a Python module, e.g. lambda_function.handler.`);
  const path = `${file}.py`;
  if (!files.some((f) => f.path === path || f.path === `${file}/__init__.py`))
    throw invalidParameter(`The zip has no ${path} for Handler "${handler.slice(0, 80)}".`);
  const shim = PYTHON_SHIM.replace(/MODULE/g, () => module).replace(/EXPORT/g, () => exported);
  const repacked = [...files.filter((f) => f.path !== '__main__.py'), { path: '__main__.py', data: Buffer.from(shim), mode: 0 }];
  return { kind: 'python:3', code: packZip(repacked).toString('base64'), main: exported };
}

const PYTHON_SHIM = `# Made by Isola's Lambda API: calls the Handler MODULE.EXPORT as Lambda does.
import os as _isola_os
import time as _isola_time
from MODULE import EXPORT as _isola_lambda_handler


class _IsolaLambdaContext:
    def __init__(self):
        self.aws_request_id = _isola_os.environ.get('__OW_ACTIVATION_ID', '')
        self.function_name = _isola_os.environ.get('__OW_ACTION_NAME', '').split('/')[-1]
        self.function_version = _isola_os.environ.get('__OW_ACTION_VERSION', '$LATEST')
        self.invoked_function_arn = ''
        self.memory_limit_in_mb = _isola_os.environ.get('__OW_MEMORY_LIMIT_MB', '')
        self.log_group_name = ''
        self.log_stream_name = ''

    def get_remaining_time_in_millis(self):
        deadline = _isola_os.environ.get('__OW_DEADLINE')
        return max(0, int(deadline) - int(_isola_time.time() * 1000)) if deadline else 0


def EXPORT(event, context=None):
    return _isola_lambda_handler(event, context if context is not None else _IsolaLambdaContext())
`;

/** `com.example.Handler::handleRequest` is Isola's `com.example.Handler#handleRequest`. */
function javaMain(handler: string): string {
  const [className = '', method = 'handleRequest'] = handler.split('::');
  if (!/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/.test(className) || !/^[A-Za-z_$][\w$]*$/.test(method)) {
    throw invalidParameter(
      `Handler "${handler.slice(0, 80)}" must be a Java class and method, e.g. example.Hello::handleRequest.`,
    );
  }
  return `${className}#${method}`;
}

/** The file a single-file function's source is, by kind, when no Lambda Handler names it. */
const SOURCE_FILES: Readonly<Record<Kind, string>> = {
  'nodejs:20': 'index.js',
  'python:3': 'lambda_function.py',
  'java:17': 'Main.java',
  'go:1.19': 'main.go',
  'ruby:3.1': 'lambda_function.rb',
  'php:8.2': 'index.php',
  native: 'exec',
  wasm: 'function.wasm',
};

const SOURCE_EXTENSIONS: Readonly<Partial<Record<Kind, string>>> = {
  'nodejs:20': '.js',
  'python:3': '.py',
  'go:1.19': '.go',
  'ruby:3.1': '.rb',
  'php:8.2': '.php',
};

/** Where a single-file function's code goes in its deployment package. */
export function sourceFileName(action: Pick<ActionVersion, 'exec'>, handler: string | undefined): string {
  const { kind, main } = action.exec;
  const extension = SOURCE_EXTENSIONS[kind];
  // A Lambda Handler `file.export` names the file (as Lambda finds it).
  const at = handler?.lastIndexOf('.') ?? -1;
  const file = handler !== undefined && at > 0 ? handler.slice(0, at) : undefined;
  if (extension !== undefined && file !== undefined && /^[\w-]+(\/[\w-]+)*$/.test(file)) return `${file}${extension}`;
  if (kind === 'java:17' && main !== undefined) {
    const className = main.split('#')[0] ?? '';
    if (/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/.test(className)) return `${className.replace(/\./g, '/')}.java`;
  }
  return SOURCE_FILES[kind];
}

/**
 * A function's deployment package as Lambda hands it out: the stored zip as it is (a jar too),
 * and a single file zipped under the name its Handler implies (an executable `exec` keeps its
 * mode). Undefined for what has no code (a sequence, empty code).
 */
export function deploymentPackage(action: ActionVersion, handler: string | undefined): Buffer | undefined {
  if (action.sequence || action.exec.code === '') return undefined;
  const bytes = action.exec.binary ? Buffer.from(action.exec.code, 'base64') : Buffer.from(action.exec.code, 'utf8');
  if (action.exec.binary && isZip(bytes)) return bytes;
  const name = sourceFileName(action, handler);
  // Unix permissions in the high half of the external attributes: rwxr-xr-x for an executable.
  const mode = action.exec.kind === 'native' ? 0o100755 : 0o100644;
  return Buffer.from(zipSync({ [name]: [bytes, { os: 3, attrs: (mode << 16) >>> 0, level: 6 }] }));
}
