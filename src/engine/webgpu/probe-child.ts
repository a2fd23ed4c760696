// Run by probe.ts as a child process: prints the WebGPU adapter probe as one JSON line.
import { probeAdapter } from './probe.js';

process.stdout.write(`${JSON.stringify(await probeAdapter())}\n`);
process.exit(0);
