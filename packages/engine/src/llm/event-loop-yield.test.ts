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
    expect(never.due()).toBe(false);
    const always = new EventLoopYield(0);
    expect(always.due()).toBe(true);
    expect(await tookTurn(() => always.yield())).toBe(true);
    expect(always.due()).toBe(true);
    expect(await tookTurn(() => always.yield())).toBe(true);
  });

  it('is due again only once the interval has passed since the last turn', async () => {
    const turn = new EventLoopYield(20);
    expect(turn.due()).toBe(false);
    await new Promise((r) => setTimeout(r, 30));
    expect(turn.due()).toBe(true);
    await turn.yield();
    expect(turn.due()).toBe(false);
  });
});
