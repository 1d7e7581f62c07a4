import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { html, trusted } from './html.js';

describe('html', () => {
  it('escapes what it interpolates, so text from users never becomes markup', () => {
    const name = '<script>alert("x")</script> & \'quotes\'';
    assert.equal(
      html`<td title="${name}">${name}</td>`.value,
      '<td title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;</td>',
    );
  });

  it('keeps nested fragments and arrays of them, and renders nothing for null, undefined and false', () => {
    const rows = ['a<b', 'c'].map((x) => html`<li>${x}</li>`);
    assert.equal(html`<ul>${rows}</ul>${null}${undefined}${false}${0}`.value, '<ul><li>a&lt;b</li><li>c</li></ul>0');
    assert.equal(html`${trusted('<br>')}`.value, '<br>');
  });
});
