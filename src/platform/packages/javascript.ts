import { compileFunction } from 'node:vm';
import { type TransformFailure, transform } from 'esbuild';
import { badRequest } from '../../core/errors.js';

/** What a Node.js source is once read: plain CommonJS runs as sent; the others are compiled. */
export type NodeSource = { flavour: 'commonjs' } | { flavour: 'module' | 'typescript'; code: string };

/** The parameters the agent compiles a CommonJS source with (see src/guest/agent.ts). */
const COMMONJS_PARAMETERS = ['exports', 'require', 'module', '__filename', '__dirname'];

/** Signs that a text that parses neither way was meant as an ES module or TypeScript. */
const MODULE_OR_TYPES =
  /^\s*(import\s|import\{|export\s|export\{)|^\s*(interface|type|enum)\s+\w+|\w\s*:\s*(string|number|boolean|any|unknown|void|Record<|Promise<|Array<)/m;

function parsesAsCommonJs(code: string): boolean {
  try {
    compileFunction(code, COMMONJS_PARAMETERS);
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads a Node.js source: CommonJS stays as it is (a syntax error in it is reported when the
 * function is loaded, as before); an ES module or TypeScript becomes CommonJS laid out on the
 * source's lines (or, when that cannot be done, with an inline source map). `export default` also
 * answers as the entry point when the module has no export of that name.
 */
export async function compileNodeSource(code: string, name: string, main: string): Promise<NodeSource> {
  if (parsesAsCommonJs(code)) return { flavour: 'commonjs' };
  const module = await esbuild(code, 'js', `${name}.mjs`, main);
  if (module.ok) return { flavour: 'module', code: module.code };
  const typescript = await esbuild(code, 'ts', `${name}.ts`, main);
  if (typescript.ok) return { flavour: 'typescript', code: typescript.code };
  const error = typescript.topLevelAwait || module.topLevelAwait ? typescript : undefined;
  if (error) {
    throw badRequest(
      'The function uses top-level await, which cannot become CommonJS (how Isola loads JavaScript): ' +
        `move the await into ${main} or a function it calls.\n${error.message}`,
    );
  }
  if (MODULE_OR_TYPES.test(code)) {
    // TypeScript's errors also make sense for JavaScript; only a JavaScript error is told as such.
    const quoted = /\b(interface|type|enum)\s+\w+|:\s*\w/.test(code) ? typescript : module;
    throw badRequest(`The function does not compile:\n${quoted.message}`);
  }
  return { flavour: 'commonjs' };
}

type Compiled = { ok: true; code: string } | { ok: false; message: string; topLevelAwait: boolean };

async function esbuild(code: string, loader: 'js' | 'ts', sourcefile: string, main: string): Promise<Compiled> {
  // An ES module's `export default` answers for the entry point when nothing has its name.
  const footer = `if (module.exports && typeof module.exports[${JSON.stringify(main)}] !== 'function' && typeof module.exports.default === 'function') module.exports[${JSON.stringify(main)}] = module.exports.default;`;
  let result: { code: string; map: string };
  try {
    result = await transform(code, {
      loader,
      format: 'cjs',
      platform: 'node',
      target: 'node20',
      sourcemap: 'external',
      sourcefile,
      logLevel: 'silent',
    });
  } catch (error) {
    const failure = error as TransformFailure;
    const messages = (failure.errors ?? []).slice(0, 5).map((m) => {
      const where = m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : '';
      const line = m.location?.lineText ? `\n    ${m.location.lineText.slice(0, 200)}` : '';
      return `${where}${m.text}${line}`;
    });
    const message = messages.join('\n') || String((error as Error).message);
    return { ok: false, message, topLevelAwait: /top-level await/i.test(message) };
  }
  const relaid = await retainLines(result.code, result.map);
  if (relaid !== undefined) return { ok: true, code: `${relaid}\n${footer}\n` };
  // Lines could not be kept: the source map says where each line came from instead.
  const inline = Buffer.from(result.map).toString('base64');
  return { ok: true, code: `${result.code}${footer}\n//# sourceMappingURL=data:application/json;base64,${inline}\n` };
}

/**
 * Lays the compiled code out so that each statement is on the line it had in the source: stack
 * traces and syntax errors then give the source's line numbers in every backend (a V8 isolate
 * reads no source map). Lines are only joined or padded with blank lines; the result is checked to
 * be the same program (esbuild minifies both to the same text), else undefined.
 */
async function retainLines(code: string, map: string): Promise<string | undefined> {
  const origins = firstOriginalLines(JSON.parse(map) as { mappings: string });
  const generated = code.replace(/\n\/\/# sourceMappingURL=.*\n?$/, '').split('\n');
  const out: string[] = [];
  generated.forEach((line, index) => {
    const origin = origins[index];
    // A comment of esbuild's own would swallow what is joined after it.
    if (/^\s*\/\/ /.test(line)) return;
    if (out.length === 0) out.push(line);
    else if (origin !== undefined && origin >= out.length) {
      while (out.length < origin) out.push('');
      out.push(line);
    } else if (line.trim() !== '') out[out.length - 1] = `${out[out.length - 1]} ${line.trimStart()}`;
  });
  const relaid = out.join('\n');
  try {
    const [before, after] = await Promise.all(
      [code, relaid].map((text) => transform(text, { loader: 'js', format: 'cjs', minify: true, logLevel: 'silent' })),
    );
    return before?.code === after?.code ? relaid : undefined;
  } catch {
    return undefined;
  }
}

const BASE64_DIGITS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** For each generated line (0-based), the source line (0-based) its first mapped segment came from. */
function firstOriginalLines(map: { mappings: string }): (number | undefined)[] {
  const lines: (number | undefined)[] = [];
  let sourceLine = 0;
  for (const segments of map.mappings.split(';')) {
    let first: number | undefined;
    for (const segment of segments.split(',')) {
      if (segment === '') continue;
      const fields = decodeVlq(segment);
      if (fields.length >= 4) {
        sourceLine += fields[2] as number;
        first ??= sourceLine;
      }
    }
    lines.push(first);
  }
  return lines;
}

function decodeVlq(segment: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const char of segment) {
    const digit = BASE64_DIGITS.indexOf(char);
    value += (digit & 31) << shift;
    if (digit & 32) shift += 5;
    else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}
