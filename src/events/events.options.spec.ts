import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { OnTombstoneEvent } from './events.listeners.js';
import { resolveTombstoneEventsOptions } from './events.options.js';

const sink = { name: 'audit', deliver: async () => undefined };

describe('TombstoneEventsModule options', () => {
  it('has defaults for everything', () => {
    expect(resolveTombstoneEventsOptions(undefined)).toMatchObject({
      listeners: true,
      eventEmitter: 'auto',
      webhooks: [],
      sinks: [],
      maxAttempts: 10,
      retryDelayMs: 1000,
      maxRetryDelayMs: 3_600_000,
      leaseMs: 60_000,
      pollIntervalMs: 1000,
      claimSize: 100,
      retentionDays: 7,
      deadLetterRetentionDays: 30,
      deliver: true,
    });
  });

  it.each([
    [{ maxAttempts: 0 }, /maxAttempts.*1 to 1000/],
    [{ maxAttempts: 1.5 }, /maxAttempts/],
    [{ leaseMs: 10 }, /leaseMs.*1000/],
    [{ retryDelayMs: 5000, maxRetryDelayMs: 1000 }, /maxRetryDelayMs.*at least/],
    [{ retentionDays: -1 }, /retentionDays/],
    [{ listeners: 'yes' }, /listeners.*true or false/],
    [{ eventEmitter: 'sometimes' }, /eventEmitter/],
    [{ sinks: [{ name: 'x' }] }, /deliver\(events, signal\)/],
    [{ sinks: [{ ...sink, name: '' }] }, /name.*printable/],
    [{ sinks: [{ ...sink, batchSize: 0 }] }, /batchSize/],
    [{ webhooks: [{ url: 'ftp://x', secret: 'whsec_x' }] }, /webhooks\[0\]/],
    [{ retries: 3 }, /unknown option 'retries'/],
  ])('refuses %j', (options, message) => {
    expect(() => resolveTombstoneEventsOptions(options as never)).toThrow(TombstoneConfigurationError);
    expect(() => resolveTombstoneEventsOptions(options as never)).toThrow(message);
  });

  it('@OnTombstoneEvent() refuses unknown types and bad names at declaration', () => {
    expect(() => OnTombstoneEvent('tombstone.deleted' as never)).toThrow(/unknown event type/);
    expect(() => OnTombstoneEvent([])).toThrow(/unknown event type/);
    expect(() => OnTombstoneEvent('tombstone.created', { name: 'a\nb' })).toThrow(/name/);
  });
});
