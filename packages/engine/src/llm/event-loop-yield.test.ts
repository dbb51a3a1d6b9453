import { describe, expect, it } from 'vitest';
import { EventLoopYield } from './event-loop-yield.js';

/** Whether a setImmediate callback queued before `f` ran by the time `f` resolved (i.e. `f` took an event-loop turn). */
async function tookTurn(f: () => Promise<void>): Promise<boolean> {
  let ran = false;
  setImmediate(() => (ran = true));
  await f();
  return ran;
}

describe('EventLoopYield', () => {
  it('takes an event-loop turn once the interval has passed, and not before', async () => {
    const never = new EventLoopYield(Infinity);
    expect(await tookTurn(() => never.maybe())).toBe(false);
    const always = new EventLoopYield(0);
    expect(await tookTurn(() => always.maybe())).toBe(true);
    expect(await tookTurn(() => always.maybe())).toBe(true);
  });
});
