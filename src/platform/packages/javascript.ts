import { compileFunction } from 'node:vm';
import { type TransformFailure, transform } from 'esbuild';
import { badRequest } from '../../core/errors.js';

/** What a Node.js source is once read: plain CommonJS runs as sent; the others are compiled. */
export type NodeSource = { flavour: 'commonjs' } | { flavour: 'module' | 'typescript'; code: string };

/** The parameters the agent compiles a CommonJS source with (see src/guest/agent.ts). */
const COMMONJS_PARAMETERS = ['exports', 'require', 'module', '__filename', '__dirname'];

/** Signs that a text that parses neither way was meant as an ES module or TypeScript. */
const MODULE_OR_TYPES =
  /^\s*(import\s|import\{|export\s|export\{)|^\s*(interface|type|enum)\s+\w+|\w\s*:\s*(string|number|boolean|any|unknown|void|Record<|Promise<|\{)/m;

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
 * function is loaded, as before); an ES module or TypeScript becomes CommonJS with an inline source
 * map. `export default` also answers as the entry point when the module has no export of that name.
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
  try {
    const result = await transform(code, {
      loader,
      format: 'cjs',
      platform: 'node',
      target: 'node20',
      sourcemap: 'inline',
      sourcefile,
      // An ES module's `export default` answers for the entry point when nothing has its name.
      footer: `if (module.exports && typeof module.exports[${JSON.stringify(main)}] !== 'function' && typeof module.exports.default === 'function') module.exports[${JSON.stringify(main)}] = module.exports.default;`,
      logLevel: 'silent',
    });
    return { ok: true, code: result.code };
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
}
