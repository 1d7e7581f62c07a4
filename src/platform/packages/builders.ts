import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { badRequest } from '../../core/errors.js';
import type { Kind } from '../../core/kinds.js';
import type { Exec } from '../../core/types.js';
import type { FunctionPackage, RuntimeStart } from '../../guest/protocol.js';
import { assertCompiled, type CompileLimits, runCompiler, toolVersion } from './compiler.js';
import { compileNodeSource } from './javascript.js';
import { base64Head, decodeBase64, isElf, isZip, packZip, readZip, type ZipFile } from './zip.js';

export const PYTHON = '/usr/bin/python3';
export const JAVA = '/usr/bin/java';
export const JAVAC = '/usr/bin/javac';
export const GO = '/usr/bin/go';
export const RUBY = '/usr/bin/ruby';
export const PHP = '/usr/bin/php';
export const GSON_JAR = '/usr/share/java/gson.jar';

/** What the deploy made of an exec: a package for the guest, or CommonJS that replaces the source. */
export interface PreparedFunction {
  package?: FunctionPackage;
  /** An ES module or TypeScript compiled to CommonJS (inline source map): runs instead of `exec.code`. */
  code?: string;
  /** The extension the function's file has in stack traces (`.ts` for TypeScript, `.py`...). */
  extension: string;
}

export interface BuildContext {
  /** The action's name: what the compiled source is called in messages and source maps. */
  name: string;
  /** Where the kinds' launchers are (src/guest/launchers). */
  launchersDir: string;
  /** A directory of the platform's own for compiler caches (Go's build cache, the compiled Java launcher). */
  cacheDir: string;
  limits: CompileLimits;
}

/** The extension a kind's source has. */
export const EXTENSION_OF_KIND: Record<Kind, string> = {
  'nodejs:20': '.js',
  'python:3': '.py',
  'java:17': '.java',
  'go:1.19': '.go',
  'ruby:3.1': '.rb',
  'php:8.2': '.php',
  native: '',
  wasm: '.wasm',
};

/** An exec's code is a base64 zip (a jar is one) when its first bytes say so, whatever `binary` says. */
export function isZipCode(code: string): boolean {
  const head = base64Head(code);
  return head !== undefined && isZip(head);
}

export function isElfCode(code: string): boolean {
  const head = base64Head(code);
  return head !== undefined && isElf(head);
}

/**
 * Turns an exec into what the guest runs: checks and repacks a zip, compiles a source, adds the
 * kind's launcher. Throws a 400 for what the caller sent (a bad zip, a compile error).
 */
export async function buildFunction(exec: Exec, context: BuildContext): Promise<PreparedFunction> {
  const main = exec.main ?? 'main';
  const zipped = exec.binary && isZipCode(exec.code);
  switch (exec.kind) {
    case 'wasm':
      return { extension: '.wasm' };
    case 'nodejs:20':
      return zipped ? nodeZip(await unzip(exec.code)) : nodeSource(exec.code, context.name, main);
    case 'python:3':
      return python(zipped ? await unzip(exec.code) : [text('__main__.py', exec.code)], main, context);
    case 'java:17':
      return zipped ? javaJar(await unzip(exec.code), exec.main, context) : javaSource(exec.code, exec.main, context);
    case 'go:1.19':
      return go(zipped ? await unzip(exec.code) : [text('function.go', exec.code)], context);
    case 'ruby:3.1':
      if (zipped) throw badRequest('A ruby:3.1 action is one source file; send it as text.');
      return interpreted('ruby:3.1', '.rb', [text('main.rb', exec.code)], main, context);
    case 'php:8.2':
      if (zipped) throw badRequest('A php:8.2 action is one source file; send it as text.');
      return interpreted('php:8.2', '.php', [text('index.php', exec.code)], main, context);
    case 'native':
      return zipped ? nativeZip(exec.code) : native(exec);
  }
}

function text(path: string, code: string): ZipFile {
  return { path, data: Buffer.from(code, 'utf8'), mode: 0 };
}

async function unzip(code: string): Promise<ZipFile[]> {
  return readZip(decodeBase64(code, 'zip'));
}

function packageOf(files: readonly ZipFile[], rest: Omit<FunctionPackage, 'zip'>): FunctionPackage {
  return { zip: packZip(files).toString('base64'), ...rest };
}

async function launcher(context: Pick<BuildContext, 'launchersDir'>, file: string): Promise<ZipFile> {
  const path = join(context.launchersDir, file);
  // A missing launcher is the platform's fault (an incomplete install), not the caller's: not a 400.
  return { path: file, data: await readFile(path), mode: 0 };
}

function has(files: readonly ZipFile[], path: string): boolean {
  return files.some((f) => f.path === path);
}

async function nodeSource(code: string, name: string, main: string): Promise<PreparedFunction> {
  const source = await compileNodeSource(code, name, main);
  if (source.flavour === 'commonjs') return { extension: '.js' };
  return { code: source.code, extension: source.flavour === 'typescript' ? '.ts' : '.mjs' };
}

function nodeZip(files: ZipFile[]): PreparedFunction {
  let module = 'index.js';
  const manifest = files.find((f) => f.path === 'package.json');
  if (manifest) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(manifest.data).toString('utf8'));
    } catch (error) {
      throw badRequest(`The zip's package.json is not valid JSON: ${(error as Error).message}`);
    }
    const declared = (parsed as { main?: unknown } | null)?.main;
    if (typeof declared === 'string' && declared.length > 0) module = declared.replace(/^\.\//, '');
  }
  const candidates = [module, `${module}.js`, `${module}/index.js`];
  const found = candidates.find((c) => has(files, c));
  if (!found) {
    throw badRequest(
      `The zip has no ${module}: a Node.js zip holds package.json (its "main" names the module, default index.js) ` +
        'and node_modules at its top.',
    );
  }
  return { package: packageOf(files, { module: found }), extension: '.js' };
}

async function python(files: ZipFile[], main: string, context: BuildContext): Promise<PreparedFunction> {
  if (!has(files, '__main__.py')) {
    throw badRequest('A python:3 zip needs __main__.py at its top (and may hold virtualenv/ with its packages).');
  }
  return interpreted('python:3', '.py', files, main, context);
}

type InterpretedKind = 'python:3' | 'ruby:3.1' | 'php:8.2';

/** Each interpreted kind's launcher and the argv that runs it (the function's name follows). */
const INTERPRETERS: Record<InterpretedKind, { launcher: string; command: string[] }> = {
  'python:3': { launcher: 'launcher.py', command: [PYTHON, '-u', 'launcher.py'] },
  'ruby:3.1': { launcher: 'launcher.rb', command: [RUBY, '--disable-gems', 'launcher.rb'] },
  'php:8.2': { launcher: 'launcher.php', command: [PHP, '-d', 'display_errors=stderr', 'launcher.php'] },
};

function isInterpreted(kind: Kind): kind is InterpretedKind {
  return Object.hasOwn(INTERPRETERS, kind);
}

/** A runtime's id: its kind and a digest of its files (the launcher; Gson too for Java) and argv, so that a package only loads into the runtime it was built for. */
function runtimeId(kind: Kind, files: readonly ZipFile[], command: readonly string[]): string {
  const hash = createHash('sha256');
  for (const file of files) hash.update(`\0${file.path}\0`).update(file.data);
  return `${kind}@${hash
    .update(`\0${command.join('\0')}`)
    .digest('hex')
    .slice(0, 16)}`;
}

/**
 * What a blank sandbox of this kind starts ahead of its function (the interpreter with the
 * launcher waiting for a `load` line; a JVM with the launcher and Gson), or undefined for a kind
 * whose process is the function (Go, native).
 */
export async function runtimeStartOf(kind: Kind, context: BuildContext): Promise<RuntimeStart | undefined> {
  if (kind === 'java:17') {
    const files = await javaRuntimeFiles(context);
    return {
      id: runtimeId('java:17', files, JAVA_RUNTIME_COMMAND),
      zip: packZip(files).toString('base64'),
      command: JAVA_RUNTIME_COMMAND,
    };
  }
  if (!isInterpreted(kind)) return undefined;
  const { launcher: file, command } = INTERPRETERS[kind];
  const launcherFile = await launcher(context, file);
  return { id: runtimeId(kind, [launcherFile], command), zip: packZip([launcherFile]).toString('base64'), command };
}

/** Prints a Python file's syntax error the way the interpreter would, without running anything. */
const PYTHON_SYNTAX_CHECK = `import sys, traceback
try:
    compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')
except SyntaxError as error:
    sys.stderr.write(''.join(traceback.format_exception_only(type(error), error)))
    sys.exit(1)
`;

/**
 * The entry file's syntax checked by its own interpreter at deploy, so that a typo is a 400 that
 * quotes it rather than a failed cold start. None of these runs the code: Python only compiles it
 * (isolated mode: nothing of the function's directory is imported), `ruby -c` and `php -l` only
 * parse it.
 */
async function checkSyntax(kind: InterpretedKind, files: readonly ZipFile[], context: BuildContext): Promise<void> {
  const entry = { 'python:3': '__main__.py', 'ruby:3.1': 'main.rb', 'php:8.2': 'index.php' }[kind];
  const file = files.find((f) => f.path === entry);
  if (!file) return;
  const argv = {
    'python:3': [PYTHON, '-I', '-S', '-c', PYTHON_SYNTAX_CHECK, entry],
    'ruby:3.1': [RUBY, '--disable-gems', '-c', entry],
    'php:8.2': [PHP, '-n', '-d', 'display_errors=stderr', '-l', entry],
  }[kind];
  await withTemp(async (dir) => {
    await writeFile(join(dir, entry), file.data);
    const run = await runCompiler(argv, { cwd: dir, env: compilerEnv(dir), limits: context.limits });
    // PHP says "No syntax errors detected" or "Errors parsing" beside the error itself.
    const tidy = (output: string) => output.replace(/^(No syntax errors detected in|Errors parsing) .*$/gm, '').trim();
    assertCompiled(`The ${{ 'python:3': 'Python', 'ruby:3.1': 'Ruby', 'php:8.2': 'PHP' }[kind]} source`, run, tidy);
  });
}

async function interpreted(
  kind: InterpretedKind,
  extension: string,
  files: ZipFile[],
  main: string,
  context: BuildContext,
): Promise<PreparedFunction> {
  const { launcher: file, command } = INTERPRETERS[kind];
  if (has(files, file)) throw badRequest(`The name ${file} is reserved for Isola's launcher; rename that file.`);
  await checkSyntax(kind, files, context);
  const launcherFile = await launcher(context, file);
  const pack = [...files, launcherFile];
  return {
    package: packageOf(pack, {
      command: [...command, main],
      ack: true,
      runtime: { id: runtimeId(kind, [launcherFile], command), args: [main] },
    }),
    extension,
  };
}

function native(exec: Exec): PreparedFunction {
  return { package: nativePackage(exec), extension: '' };
}

function nativePackage(exec: Exec): FunctionPackage {
  const command = ['./exec'];
  if (!exec.binary) {
    if (!exec.code.startsWith('#!')) {
      throw badRequest(
        'A native action is a Linux executable (base64), a zip with exec at its top, or a script starting with #!.',
      );
    }
    return packageOf([text('exec', exec.code)], { command, executables: ['exec'], ack: false });
  }
  const bytes = decodeBase64(exec.code, 'executable');
  if (isElf(bytes))
    return packageOf([{ path: 'exec', data: bytes, mode: 0o755 }], { command, executables: ['exec'], ack: false });
  throw badRequest('A native action is a Linux executable (ELF) or a zip with exec at its top.');
}

/**
 * A native zip: checked and repacked. With `exec` at its top it speaks ActionLoop; otherwise with
 * `bootstrap` it is a Lambda custom runtime (`provided.al2023`), run behind the Runtime API.
 */
async function nativeZip(code: string): Promise<PreparedFunction> {
  const files = await unzip(code);
  if (has(files, 'exec')) {
    return {
      package: packageOf(files, { command: ['./exec'], executables: ['exec'], ack: false }),
      extension: '',
    };
  }
  if (has(files, 'bootstrap')) {
    // A custom runtime often runs more of its own files (a binary beside a bootstrap script):
    // those the zip marks executable stay so, as Lambda extracts them.
    const executables = files.filter((f) => f.path === 'bootstrap' || (f.mode & 0o111) !== 0).map((f) => f.path);
    return {
      package: packageOf(files, { command: ['./bootstrap'], executables, lambdaRuntime: true }),
      extension: '',
    };
  }
  throw badRequest(
    'A native zip needs an executable at its top: exec (speaks ActionLoop) or bootstrap (a Lambda custom runtime, ' +
      'served the Runtime API).',
  );
}

// ---- compiled languages --------------------------------------------------------------------

async function withTemp<T>(work: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'isola-build-'));
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeFiles(dir: string, files: readonly ZipFile[]): Promise<void> {
  for (const file of files) {
    const path = join(dir, file.path);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, file.data);
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)));
}

/** A clean environment for a compiler: nothing of the server's, no network for Go. */
function compilerEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8', ...extra };
}

/** Compiler messages name files in a temporary directory: show them relative to it. */
const relativeTo = (dir: string) => (output: string) => output.split(`${dir}/`).join('');

/** The compiled IsolaLauncher, made once per launcher source and javac. */
const javaLaunchers = new Map<string, Promise<ZipFile[]>>();

async function javaLauncher(context: BuildContext): Promise<ZipFile[]> {
  const source = await readFile(join(context.launchersDir, 'IsolaLauncher.java'));
  const key = createHash('sha256')
    .update(source)
    .update(await toolVersion([JAVAC, '-version']))
    .digest('hex')
    .slice(0, 16);
  let classes = javaLaunchers.get(key);
  if (!classes) {
    classes = compileJavaLauncher(source, key, context);
    javaLaunchers.set(key, classes);
    classes.catch(() => javaLaunchers.delete(key));
  }
  return classes;
}

async function compileJavaLauncher(source: Buffer, key: string, context: BuildContext): Promise<ZipFile[]> {
  const out = join(context.cacheDir, `java-launcher-${key}`);
  const done = await stat(join(out, 'IsolaLauncher.class')).then(
    () => true,
    () => false,
  );
  if (!done) {
    await withTemp(async (dir) => {
      await writeFile(join(dir, 'IsolaLauncher.java'), source);
      await mkdir(join(dir, 'classes'));
      const run = await runCompiler(
        [
          JAVAC,
          '-J-Xmx256m',
          '-J-XX:+UseSerialGC',
          '-proc:none',
          '-encoding',
          'UTF-8',
          '-cp',
          GSON_JAR,
          '-d',
          'classes',
          'IsolaLauncher.java',
        ],
        { cwd: dir, env: compilerEnv(dir), limits: context.limits },
      );
      if (run.status !== 0) throw new Error(`The Java launcher does not compile: ${run.output.slice(0, 2000)}`);
      await rm(out, { recursive: true, force: true });
      await mkdir(context.cacheDir, { recursive: true });
      await rename(join(dir, 'classes'), out);
    });
  }
  const files = await listFiles(out);
  return Promise.all(files.map(async (path) => ({ path: `launcher/${path}`, data: await readFile(join(out, path)), mode: 0 })));
}

/** The JVM's argv up to its class path: the heap sized to the sandbox, a quick start (C1 only, CDS). */
const JAVA_FLAGS = [JAVA, '-XX:MaxRAM={{memoryMb}}m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xshare:auto'];
/** A JVM started ahead has the launcher and Gson only; the function's jar is loaded when it arrives. */
const JAVA_RUNTIME_COMMAND = [...JAVA_FLAGS, '-cp', 'launcher:gson.jar', 'IsolaLauncher'];

async function javaRuntimeFiles(context: BuildContext): Promise<ZipFile[]> {
  return [...(await javaLauncher(context)), { path: 'gson.jar', data: await readFile(GSON_JAR), mode: 0 }];
}

async function javaPackage(functionJar: Uint8Array, main: string, context: BuildContext): Promise<PreparedFunction> {
  const runtimeFiles = await javaRuntimeFiles(context);
  const files: ZipFile[] = [...runtimeFiles, { path: 'function.jar', data: functionJar, mode: 0 }];
  const command = [...JAVA_FLAGS, '-cp', 'launcher:gson.jar:function.jar', 'IsolaLauncher', main];
  return {
    package: packageOf(files, {
      command,
      ack: true,
      runtime: { id: runtimeId('java:17', runtimeFiles, JAVA_RUNTIME_COMMAND), args: [main] },
    }),
    extension: '.java',
  };
}

/** `Class` or `Class#method` with a package path: what the launcher is told to call. */
const JAVA_MAIN = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*(#[A-Za-z_$][\w$]*)?$/;

function assertJavaMain(main: string): string {
  if (!JAVA_MAIN.test(main))
    throw badRequest(
      `The Java entry point "${main.slice(0, 100)}" must be Class or Class#method (e.g. Hello or com.example.Hello#main).`,
    );
  return main;
}

async function javaSource(code: string, main: string | undefined, context: BuildContext): Promise<PreparedFunction> {
  const packageName = /^\s*package\s+([\w.]+)\s*;/m.exec(code)?.[1];
  const className =
    /\bpublic\s+(?:(?:final|abstract|static)\s+)*(?:class|record|enum|interface)\s+([A-Za-z_$][\w$]*)/.exec(code)?.[1] ??
    main?.split('#')[0]?.split('.').pop();
  if (!className) {
    throw badRequest('The Java source has no public class, and no main (Class or Class#method) says which class to call.');
  }
  const entry = assertJavaMain(main ?? (packageName ? `${packageName}.${className}` : className));
  const jar = await withTemp(async (dir) => {
    await mkdir(join(dir, 'classes'));
    await writeFile(join(dir, `${className}.java`), code);
    const run = await runCompiler(
      [
        JAVAC,
        '-J-Xmx512m',
        '-J-XX:+UseSerialGC',
        '-proc:none',
        '-encoding',
        'UTF-8',
        '-cp',
        GSON_JAR,
        '-d',
        'classes',
        `${className}.java`,
      ],
      { cwd: dir, env: compilerEnv(dir), limits: context.limits },
    );
    assertCompiled('The Java source', run, relativeTo(dir));
    const classesDir = join(dir, 'classes');
    const classes = await listFiles(classesDir);
    return packZip(await Promise.all(classes.map(async (path) => ({ path, data: await readFile(join(classesDir, path)) }))));
  });
  return javaPackage(jar, entry, context);
}

async function javaJar(files: ZipFile[], main: string | undefined, context: BuildContext): Promise<PreparedFunction> {
  if (!files.some((f) => f.path.endsWith('.class') || f.path.startsWith('META-INF/'))) {
    throw badRequest('A java:17 zip must be a jar: it holds .class files (and META-INF/).');
  }
  let entry = main;
  if (!entry) {
    const manifest = files.find((f) => f.path === 'META-INF/MANIFEST.MF');
    entry = manifest ? /^Main-Class:\s*(\S+)/m.exec(Buffer.from(manifest.data).toString('utf8'))?.[1] : undefined;
  }
  if (!entry) throw badRequest('A jar needs main: the class to call (Class or Class#method), or a Main-Class in its manifest.');
  return javaPackage(packZip(files), assertJavaMain(entry), context);
}

async function go(files: ZipFile[], context: BuildContext): Promise<PreparedFunction> {
  if (!files.some((f) => f.path.endsWith('.go') && !f.path.includes('/'))) {
    throw badRequest('A go:1.19 zip holds a Go module with its package main (func Main) at its top.');
  }
  if (has(files, 'launcher.go')) throw badRequest("The name launcher.go is reserved for Isola's launcher; rename that file.");
  const executable = await withTemp(async (dir) => {
    const source = join(dir, 'src');
    await mkdir(source);
    await writeFiles(source, [...files, await launcher(context, 'launcher.go')]);
    if (!has(files, 'go.mod')) await writeFile(join(source, 'go.mod'), 'module action\n\ngo 1.19\n');
    const run = await runCompiler([GO, 'build', '-trimpath', '-o', join(dir, 'exec'), '.'], {
      cwd: source,
      env: compilerEnv(dir, {
        CGO_ENABLED: '0',
        GOPROXY: 'off',
        GOFLAGS: '-mod=mod',
        GOCACHE: join(context.cacheDir, 'go-build'),
        GOPATH: join(dir, 'gopath'),
        GOTOOLCHAIN: 'local',
        GOMEMLIMIT: '1GiB',
      }),
      limits: context.limits,
    });
    assertCompiled('The Go source', run, relativeTo(source));
    return readFile(join(dir, 'exec'));
  });
  return {
    package: packageOf([{ path: 'exec', data: executable, mode: 0o755 }], {
      command: ['./exec'],
      executables: ['exec'],
      ack: true,
    }),
    extension: '.go',
  };
}
