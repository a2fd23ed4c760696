// Waits until a URL answers 2xx: the images' HEALTHCHECK (`--once`: one try, exit 0 or 1) and the
// gateway's wait for the CLaaS server. Node, because the slim runtime images carry no curl.
import process from 'node:process';

const args = process.argv.slice(2);
const once = args.includes('--once');
const [url, seconds = '300'] = args.filter((a) => a !== '--once');
if (!url) {
  process.stderr.write('usage: wait-http.mjs [--once] <url> [timeout seconds]\n');
  process.exit(2);
}

async function ok() {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
    return res.ok;
  } catch {
    return false;
  }
}

const deadline = Date.now() + Number(seconds) * 1000;
for (;;) {
  if (await ok()) process.exit(0);
  if (once) process.exit(1);
  if (Date.now() > deadline) {
    process.stderr.write(`${url} did not answer 2xx within ${seconds} s\n`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 1000));
}
