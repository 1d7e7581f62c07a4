import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { zipSync } from 'fflate';
import { readZip } from '../../platform/packages/zip.js';
import { LambdaError } from './errors.js';
import { lambdaPackage } from './packaging.js';

const zip = (files: Record<string, string>) =>
  Buffer.from(zipSync(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)])))).toString('base64');

async function filesOf(code: string): Promise<Record<string, string>> {
  const files = await readZip(Buffer.from(code, 'base64'));
  return Object.fromEntries(files.map((f) => [f.path, Buffer.from(f.data).toString('utf8')]));
}

async function refused(promise: Promise<unknown>, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof LambdaError);
    assert.equal(error.status, 400);
    assert.equal(error.type, 'InvalidParameterValueException');
    assert.match(error.message, message);
    return true;
  });
}

describe("Lambda's deployment packages as Isola execs", () => {
  it('keeps a Node.js zip whose index.js is the handler, and points package.json at another file', async () => {
    const plain = zip({ 'index.js': 'exports.handler = () => 1;' });
    assert.deepEqual(await lambdaPackage('nodejs20.x', 'index.handler', plain), {
      kind: 'nodejs:20',
      code: plain,
      main: 'handler',
    });
    const other = await lambdaPackage('nodejs18.x', 'src/app.run', zip({ 'src/app.js': '', 'package.json': '{"name":"x"}' }));
    assert.equal(other.main, 'run');
    assert.deepEqual(JSON.parse((await filesOf(other.code))['package.json'] ?? ''), { name: 'x', main: 'src/app.js' });
  });

  it('gives a Python zip a __main__.py that calls the handler with (event, context)', async () => {
    const pkg = await lambdaPackage('python3.12', 'lambda_function.lambda_handler', zip({ 'lambda_function.py': '' }));
    assert.equal(pkg.kind, 'python:3');
    assert.equal(pkg.main, 'lambda_handler');
    const main = (await filesOf(pkg.code))['__main__.py'] ?? '';
    assert.match(main, /from lambda_function import lambda_handler as _isola_lambda_handler/);
    assert.match(main, /def lambda_handler\(event, context=None\):/);
  });

  it('maps a Java handler onto Class#method, and a provided runtime onto native with its exec', async () => {
    const jar = zip({ 'META-INF/MANIFEST.MF': '' });
    assert.equal((await lambdaPackage('java17', 'example.Hello::handleRequest', jar)).main, 'example.Hello#handleRequest');
    assert.equal((await lambdaPackage('java17', 'example.Hello', jar)).main, 'example.Hello#handleRequest');
    assert.equal((await lambdaPackage('provided.al2023', 'x', zip({ exec: '#!/bin/sh' }))).kind, 'native');
  });

  it('runs a provided zip with a bootstrap as a custom runtime, its Handler the _HANDLER', async () => {
    const code = zip({ bootstrap: '#!/bin/sh', 'function.sh': '' });
    assert.deepEqual(await lambdaPackage('provided.al2023', 'function.handler', code), {
      kind: 'native',
      code,
      main: 'function.handler',
    });
    assert.equal((await lambdaPackage('provided.al2', 'bootstrap', code)).main, 'bootstrap');
    await refused(lambdaPackage('provided.al2023', 'a handler with spaces', code), /_HANDLER/);
  });

  it('refuses an unknown runtime, a file that is not a zip, a handler the zip lacks or cannot name', async () => {
    const code = zip({ 'index.js': '' });
    await refused(lambdaPackage('nodejs4.3', 'index.handler', code), /runtime/);
    await refused(lambdaPackage('nodejs20.x', 'index.handler', Buffer.from('text').toString('base64')), /unzip/);
    await refused(lambdaPackage('nodejs20.x', 'index.handler', 'UEsDBAo='), /unzip/);
    await refused(lambdaPackage('nodejs20.x', 'other.handler', code), /other\.js/);
    await refused(lambdaPackage('nodejs20.x', 'index.not-a-name', code), /function's name/);
    await refused(lambdaPackage('nodejs20.x', '../up.handler', code), /file\.function/);
    await refused(lambdaPackage('python3.11', 'missing.handler', code), /missing\.py/);
    await refused(lambdaPackage('java17', 'not a class', code), /Java class/);
    await refused(lambdaPackage('provided.al2023', 'x', zip({ 'main.go': '' })), /bootstrap.*exec/);
  });
});
