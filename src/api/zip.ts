// A streaming ZIP writer (deflate, no ZIP64): what the original CLaaS service's adapter export
// answers. Each entry is deflated as it is read, so an adapter of hundreds of megabytes is never
// held in memory whole; its CRC and sizes follow it in a data descriptor.
import { Readable, Transform, pipeline } from 'node:stream';
import { createDeflateRaw, crc32 } from 'node:zlib';

export interface ZipEntry {
  /** Name inside the archive (UTF-8, "/" between folders). */
  name: string;
  /** Opened by the caller before the answer starts, so a failure to open is an error status, not a cut archive. */
  data: Readable;
  modified: Date;
}

/** Without ZIP64, sizes and offsets are 32-bit; 0xFFFFFFFF itself marks a ZIP64 value. */
const ZIP32_LIMIT = 0xffffffff;
/** Bit 3: CRC and sizes come after the data; bit 11: names are UTF-8. */
const FLAGS = 0x0008 | 0x0800;
const DEFLATE = 8;
const VERSION_NEEDED = 20;
/** Made on Unix (3), spec 2.0: unzip then reads the file mode from the external attributes. */
const VERSION_MADE_BY = (3 << 8) | 20;
const REGULAR_FILE_0644 = (0o100644 << 16) >>> 0;

function dosDateTime(d: Date): { time: number; date: number } {
  // DOS dates start in 1980 and count seconds in twos.
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

function tooLarge(what: string): Error {
  return new Error(`${what} is too large for a ZIP archive without ZIP64`);
}

async function* zipChunks(entries: readonly ZipEntry[]): AsyncGenerator<Buffer> {
  const central: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, 'utf8');
    const { time, date } = dosDateTime(entry.modified);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(VERSION_NEEDED, 4);
    local.writeUInt16LE(FLAGS, 6);
    local.writeUInt16LE(DEFLATE, 8);
    local.writeUInt16LE(time, 10);
    local.writeUInt16LE(date, 12);
    // CRC and sizes (offsets 14-25) stay zero: the data descriptor carries them.
    local.writeUInt16LE(name.length, 26);
    const headerOffset = offset;
    yield Buffer.concat([local, name]);
    offset += local.length + name.length;

    let crc = 0;
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        crc = crc32(chunk, crc);
        size += chunk.length;
        done(null, chunk);
      },
    });
    const deflated = createDeflateRaw();
    // Errors reach the loop below: pipeline destroys the deflater with the source's error.
    pipeline(entry.data, meter, deflated, () => {});
    let compressed = 0;
    for await (const chunk of deflated as AsyncIterable<Buffer>) {
      compressed += chunk.length;
      yield chunk;
    }
    if (size >= ZIP32_LIMIT || compressed >= ZIP32_LIMIT) throw tooLarge(entry.name);
    offset += compressed;

    const descriptor = Buffer.alloc(16);
    descriptor.writeUInt32LE(0x08074b50, 0);
    descriptor.writeUInt32LE(crc >>> 0, 4);
    descriptor.writeUInt32LE(compressed, 8);
    descriptor.writeUInt32LE(size, 12);
    yield descriptor;
    offset += descriptor.length;
    if (headerOffset >= ZIP32_LIMIT) throw tooLarge('the archive');

    const record = Buffer.alloc(46);
    record.writeUInt32LE(0x02014b50, 0);
    record.writeUInt16LE(VERSION_MADE_BY, 4);
    record.writeUInt16LE(VERSION_NEEDED, 6);
    record.writeUInt16LE(FLAGS, 8);
    record.writeUInt16LE(DEFLATE, 10);
    record.writeUInt16LE(time, 12);
    record.writeUInt16LE(date, 14);
    record.writeUInt32LE(crc >>> 0, 16);
    record.writeUInt32LE(compressed, 20);
    record.writeUInt32LE(size, 24);
    record.writeUInt16LE(name.length, 28);
    // Extra field, comment, disk number and internal attributes (30-37) are zero.
    record.writeUInt32LE(REGULAR_FILE_0644, 38);
    record.writeUInt32LE(headerOffset, 42);
    central.push(record, name);
  }
  const directory = Buffer.concat(central);
  if (offset >= ZIP32_LIMIT || entries.length > 0xffff) throw tooLarge('the archive');
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  yield Buffer.concat([directory, end]);
}

/** The entries, in order, as a ZIP archive. */
export function zipStream(entries: readonly ZipEntry[]): Readable {
  const out = Readable.from(zipChunks(entries), { objectMode: false });
  // An archive given up part way (the client went away) must not leave its files open.
  out.once('close', () => {
    for (const e of entries) e.data.destroy();
  });
  return out;
}
