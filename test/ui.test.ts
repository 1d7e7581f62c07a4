import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { ActivationRecord } from '../src/core/types.js';
import { TestServer, waitFor } from './helpers/server.js';

/**
 * The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
 * against a real `isola serve`. Each page is checked with axe-core and a screenshot of it is saved
 * under test-results/ui/ (or $ISOLA_TEST_ARTIFACTS/ui).
 */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHOTS = join(process.env.ISOLA_TEST_ARTIFACTS ?? join(ROOT, 'test-results'), 'ui');
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const GREETER = `function main(params) {
  console.log('greeting', params.name);
  return { greeting: 'Hello, ' + (params.name || 'world') + '!' };
}`;

describe('the dashboard in a browser', {
  skip: CHROMIUM ? false : 'Chromium is not installed (scripts/setup-host.sh browser)',
}, () => {
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let tab: Page;

  /** Saves a screenshot of the page and checks it with axe-core: no serious or critical violation. */
  const check = async (name: string) => {
    await tab.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
    // Evaluated through the DevTools protocol: the page's CSP (scripts from Isola's files only) stays on.
    await tab.evaluate(AXE);
    // A string, evaluated in the page: axe-core's API is the page's, not this process's.
    const violations = (await tab.evaluate(
      `axe.run(document).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.map((n) => n.target.join(' ')) })))`,
    )) as { id: string; impact: string; targets: string[] }[];
    const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(serious, [], `accessibility of ${name}: ${JSON.stringify(serious, null, 1)}`);
  };

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    server = await TestServer.start();
    browser = await chromium.launch({ executablePath: CHROMIUM as string, args: CHROMIUM_FLAGS });
    context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    tab = await context.newPage();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it('sends a visitor without a session to the sign-in form, and refuses a wrong key', async () => {
    await tab.goto(`${server.url}/ui/functions`);
    assert.match(tab.url(), /\/ui\/signin$/);
    await check('signin');
    await tab.getByLabel('Namespace key').fill('not-a-uuid:not-a-key');
    await tab.getByRole('button', { name: 'Sign in' }).click();
    await tab.getByRole('alert').waitFor();
    assert.match((await tab.getByRole('alert').textContent()) ?? '', /does not open a namespace/);
    const cookies = await context.cookies();
    assert.equal(cookies.filter((c) => c.name === 'isola_ui').length, 0, 'no session for a wrong key');
  });

  it('signs in with the namespace key (kept in an httpOnly SameSite cookie, never in the URL)', async () => {
    await tab.getByLabel('Namespace key').fill(server.auth);
    await tab.getByRole('button', { name: 'Sign in' }).click();
    await tab.waitForURL(/\/ui\/functions$/);
    assert.ok(!tab.url().includes(server.auth.split(':')[1] as string));
    const session = (await context.cookies()).find((c) => c.name === 'isola_ui');
    assert.ok(session);
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(session.path, '/ui');
    await check('functions-empty');
  });

  it('deploys a function from the editor, invokes it and shows the result, the badges and the logs', async () => {
    await tab.getByRole('link', { name: 'New function' }).click();
    await tab.getByLabel('Name').fill('greeter');
    await tab.getByLabel('Code', { exact: true }).fill(GREETER);
    await check('function-new');
    await tab.getByRole('button', { name: 'Deploy' }).click();
    await tab.waitForURL(/\/ui\/functions\/greeter$/);
    await tab.getByLabel('Parameters (a JSON object)', { exact: true }).fill('{"name": "Ada"}');
    await tab.getByRole('button', { name: 'Invoke' }).click();
    const result = tab.locator('#invoke-result article');
    await result.waitFor();
    assert.match((await result.locator('pre.result').textContent()) ?? '', /"greeting": "Hello, Ada!"/);
    assert.match((await result.locator('pre.logs').textContent()) ?? '', /greeting Ada/);
    assert.equal((await result.locator('.badge.status-ok').textContent()) ?? '', 'success');
    assert.equal(await result.locator('.badge.start-cold').count(), 1, 'the first call starts cold');
    // The second call finds the instance warm.
    await tab.getByRole('button', { name: 'Invoke' }).click();
    await tab.locator('#invoke-result .badge.start-warm').waitFor();
    await check('function');
  });

  it('lists the activations and shows one with its logs', async () => {
    await tab.getByRole('link', { name: 'Activations', exact: true }).first().click();
    await tab.waitForURL(/\/ui\/activations$/);
    const rows = tab.locator('section[aria-labelledby="list-h"] tbody tr');
    await rows.first().waitFor();
    assert.equal(await rows.count(), 2);
    await check('activations');
    await rows.first().getByRole('link').nth(1).click();
    await tab.waitForURL(/\/ui\/activations\/[0-9a-f]{32}$/);
    assert.match((await tab.locator('pre.logs').textContent()) ?? '', /greeting Ada/);
    await check('activation');
  });

  it('tails new activations live, a call made through the API included', async () => {
    await tab.goto(`${server.url}/ui/activations`);
    await tab.getByRole('button', { name: 'Follow new activations' }).click();
    await tab.getByText('Following: new activations appear here.').waitFor();
    const call = await server.invoke<ActivationRecord>('greeter', { name: 'Grace' });
    assert.equal(call.status, 200);
    const row = tab.locator(`.tail-rows tr[data-id="${call.body.activationId}"]`);
    await row.waitFor({ timeout: 30_000 });
    await tab.locator('.tail-rows pre.logs', { hasText: 'greeting Grace' }).waitFor();
  });

  it('draws the charts of the last hour from the records', async () => {
    await tab.goto(`${server.url}/ui/functions/greeter`);
    const charts = tab.locator('.charts[data-series]');
    await charts.locator('canvas').first().waitFor();
    assert.equal(await charts.getAttribute('data-runs'), '3');
    assert.ok((await charts.locator('figure.chart').count()) >= 4);
  });

  it('shows the instances with their states, the backends and the benchmarks', async () => {
    await tab.goto(`${server.url}/ui/instances`);
    await tab.locator('section.fn-instances', { hasText: 'greeter' }).waitFor();
    assert.match((await tab.locator('section.fn-instances').textContent()) ?? '', /idle|busy/);
    await check('instances');
    await tab.goto(`${server.url}/ui/backends`);
    assert.match((await tab.locator('table').textContent()) ?? '', /isolate\s*ready/);
    await check('backends');
    await tab.goto(`${server.url}/ui/benchmarks`);
    await check('benchmarks');
  });

  it('fits a phone-sized window: no page scrolls sideways', async () => {
    await tab.setViewportSize({ width: 390, height: 844 });
    try {
      for (const path of ['/ui/functions', '/ui/functions/greeter', '/ui/activations', '/ui/instances']) {
        await tab.goto(`${server.url}${path}`);
        const overflow = (await tab.evaluate(
          'document.documentElement.scrollWidth - document.documentElement.clientWidth',
        )) as number;
        assert.ok(overflow <= 0, `${path} is ${overflow} px wider than the window`);
      }
      await tab.goto(`${server.url}/ui/functions/greeter`);
      await tab.screenshot({ path: join(SHOTS, 'function-phone.png'), fullPage: true });
    } finally {
      await tab.setViewportSize({ width: 1100, height: 900 });
    }
  });

  it("refuses a change without the session's CSRF token", async () => {
    const status = (await tab.evaluate(
      "fetch('/ui/functions/greeter/delete', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' }).then((r) => r.status)",
    )) as number;
    assert.equal(status, 403);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/greeter')).status, 200, 'still there');
  });

  it("shows another namespace's session only that namespace's functions", async () => {
    const created = await server.request<{ auth: string }>('PUT', '/admin/v1/namespaces/other', undefined, {
      auth: null,
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const other = await browser.newContext();
    try {
      const page = await other.newPage();
      await page.goto(`${server.url}/ui/signin`);
      await page.getByLabel('Namespace key').fill(created.body.auth);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/\/ui\/functions$/);
      assert.match((await page.locator('main').textContent()) ?? '', /No functions in other/);
      const foreign = await page.goto(`${server.url}/ui/functions/greeter`);
      assert.equal(foreign?.status(), 404);
    } finally {
      await other.close();
    }
  });

  it('signs out: the session no longer opens a page', async () => {
    await tab.goto(`${server.url}/ui/functions`);
    const cookie = (await context.cookies()).find((c) => c.name === 'isola_ui');
    assert.ok(cookie);
    await tab.getByRole('button', { name: 'Sign out' }).click();
    await tab.waitForURL(/\/ui\/signin$/);
    // The old cookie, sent again by hand, opens nothing: the session is gone from the server.
    const replay = await fetch(`${server.url}/ui/functions`, {
      headers: { cookie: `isola_ui=${cookie.value}` },
      redirect: 'manual',
    });
    assert.equal(replay.status, 303);
    assert.equal(replay.headers.get('location'), '/ui/signin');
    await waitFor('the sign-in form', async () => ((await tab.getByLabel('Namespace key').count()) === 1 ? true : undefined));
  });
});
