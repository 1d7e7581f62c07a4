// The git server's post-receive hook: for each branch pushed, a push event in Gitea's webhook shape,
// signed (X-Gitea-Signature: HMAC-SHA256 of the body with the repository's secret) and sent to the
// grading service. Usage (from hooks/post-receive): node post-receive.mjs <webhook> <clone url> <student>
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [webhook, cloneUrl, student] = process.argv.slice(2);
const secret = readFileSync('hooks/secret', 'utf8');
const lines = readFileSync(0, 'utf8').split('\n').filter(Boolean);
for (const line of lines) {
  const [before, after, ref] = line.split(' ');
  if (/^0+$/.test(after)) continue; // a deleted branch: nothing to grade
  const body = JSON.stringify({
    ref,
    before,
    after,
    repository: { name: student, full_name: `course/${student}`, clone_url: cloneUrl },
    pusher: { login: student },
  });
  const signature = createHmac('sha256', secret).update(body).digest('hex');
  const res = await fetch(webhook, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-gitea-event': 'push', 'x-gitea-signature': signature },
    body,
  });
  process.stderr.write(`autograder: ${res.status} ${await res.text()}\n`);
}
