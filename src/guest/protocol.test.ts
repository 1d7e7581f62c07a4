import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, encodeJsonFrame, FrameDecoder, FrameError, type GuestMessage, MAX_FRAME_BYTES } from './protocol.js';

describe('framed protocol', () => {
  it('reassembles frames split anywhere and several in one chunk', () => {
    const messages: GuestMessage[] = [
      { type: 'hello', protocol: 1, pid: 7, node: 'v20' },
      { type: 'log', id: 'a', stream: 'stdout', text: 'héllo\n' },
      { type: 'result', id: 'a', result: { big: 'x'.repeat(10_000) } },
    ];
    const bytes = Buffer.concat(messages.map(encodeFrame));
    for (const step of [1, 3, 7, 4096, bytes.length]) {
      const decoder = new FrameDecoder<GuestMessage>();
      const seen: GuestMessage[] = [];
      for (let i = 0; i < bytes.length; i += step) seen.push(...decoder.push(bytes.subarray(i, i + step)));
      assert.deepEqual(seen, messages, `chunks of ${step}`);
    }
  });
  it('refuses an oversized or corrupt frame', () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1);
    assert.throws(() => new FrameDecoder().push(header), FrameError);
    const corrupt = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x}')]);
    assert.throws(() => new FrameDecoder().push(corrupt), FrameError);
  });
  it('refuses valid JSON that is not a message (a forged frame must not reach the handlers)', () => {
    for (const json of ['null', '42', '"text"', '[]', '{}', '{"type":5}']) {
      assert.throws(() => new FrameDecoder().push(encodeJsonFrame(json)), FrameError, json);
    }
  });
  it('keeps, on the error, the messages that came whole before a corrupt frame in the same chunk', () => {
    const started: GuestMessage = { type: 'started', id: 'a' };
    const chunk = Buffer.concat([encodeFrame(started), encodeJsonFrame('null')]);
    assert.throws(
      () => new FrameDecoder().push(chunk),
      (error: unknown) => error instanceof FrameError && JSON.stringify(error.decoded) === JSON.stringify([started]),
    );
  });
  it('frames JSON text written by hand like a message', () => {
    const json = '{"type":"result","id":"é","result":{"n":1}}';
    assert.deepEqual(new FrameDecoder().push(encodeJsonFrame(json)), [{ type: 'result', id: 'é', result: { n: 1 } }]);
    assert.deepEqual(encodeJsonFrame(JSON.stringify({ type: 'ready' })), encodeFrame({ type: 'ready' }));
  });
});
