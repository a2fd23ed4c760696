// Completion records survive a reopen of the database with their exact token ids and log-probabilities;
// a feedback job the server stopped during too often is given up with its reason instead of run at every start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openDb, prepare } from '../src/store/db.js';
import { CompletionStore } from '../src/store/completions.js';
import { tempDir } from '../src/model/random-model.js';
import { FeedbackJobs, MAX_ATTEMPTS } from '../src/orchestrator/feedback-jobs.js';

test('a completion record round-trips through SQLite (WAL) across a reopen', () => {
  const file = join(tempDir(), 'state', 'claas.db');
  const record = {
    id: 'chatcmpl-abc',
    createdAt: 1_700_000_000_000,
    model: 'me/style',
    adapter: 'me/style',
    adapterVersion: 'v3',
    tenant: 'ana',
    request: { messages: [{ role: 'user', content: 'hi' }], temperature: 0.7 },
    promptIds: [151644, 872, 198, 6023],
    enableThinking: false,
    choices: [
      { index: 0, outputIds: [9707, 0, 151645], outputLogprobs: [-0.25, -1.5, -0.0009765625], text: 'Hi!', finishReason: 'stop' },
      { index: 1, outputIds: [13048], outputLogprobs: [-3.75], text: 'Hey', finishReason: 'length' },
    ],
  };
  const db = openDb(file);
  assert.equal(prepare(db, 'PRAGMA journal_mode').pluck().get(), 'wal');
  new CompletionStore(db).save(record);
  db.close();
  const again = openDb(file);
  assert.deepEqual(new CompletionStore(again).get('chatcmpl-abc'), record);
  assert.equal(new CompletionStore(again).get('nope'), undefined);
  assert.throws(() => new CompletionStore(again).save(record), /UNIQUE/);
  assert.equal(again.inTransaction, false, 'a failed save is rolled back');
  again.close();
});

test('an interrupted job runs again after a restart, until the server has stopped during it MAX_ATTEMPTS times', () => {
  const file = join(tempDir(), 'claas.db');
  const item = { completionId: null, choiceIndex: 0, messages: [{ role: 'user', content: 'q' }], responseText: 'r', feedback: 'f' };
  let db = openDb(file);
  const [id] = new FeedbackJobs(db).submit([{ adapterId: 't/a', options: {}, items: [item] }]).ids;
  for (let start = 1; start <= MAX_ATTEMPTS; start++) {
    new FeedbackJobs(db).markRunning([id!]);
    db.close(); // the process dies during the update
    db = openDb(file);
    const jobs = new FeedbackJobs(db);
    jobs.requeueInterrupted();
    const job = jobs.get(id!)!;
    if (start < MAX_ATTEMPTS) {
      assert.equal(job.status, 'queued', `after stop ${start} it runs again`);
    } else {
      assert.equal(job.status, 'failed');
      assert.match(job.error!, new RegExp(`stopped during this update ${MAX_ATTEMPTS} times`));
      assert.deepEqual(jobs.queuedIds(), []);
    }
  }
  db.close();
});
