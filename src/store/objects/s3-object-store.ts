// An object store in an S3 bucket (AWS, or any S3-compatible endpoint). `ifAbsent` sends
// If-None-Match: * (a conditional write: the server refuses to replace an object); since some
// S3-compatible servers ignore that header, the object's absence is also checked first, which
// leaves such servers a window between the check and the write.
import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { UpstreamError } from '../../errors.js';
import { checkKey, type ObjectStore } from './object-store.js';

export interface S3Location {
  bucket: string;
  /** Prepended to every key ('' for none). */
  prefix: string;
  endpoint?: string;
  region: string;
  pathStyle: boolean;
}

function status(err: unknown): number | undefined {
  return err instanceof S3ServiceException ? err.$metadata.httpStatusCode : (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;

  constructor(private readonly at: S3Location) {
    this.client = new S3Client({
      region: at.region,
      ...(at.endpoint ? { endpoint: at.endpoint } : {}),
      forcePathStyle: at.pathStyle,
      // Checksums only where the API requires them: older S3-compatible servers reject the newer
      // default ones.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  get description(): string {
    return `s3://${this.at.bucket}/${this.at.prefix}${this.at.endpoint ? ` at ${this.at.endpoint}` : ''}`;
  }

  private key(key: string): string {
    checkKey(key);
    return this.at.prefix ? `${this.at.prefix}/${key}` : key;
  }

  private fail(what: string, key: string, err: unknown): never {
    throw new UpstreamError(`object store ${this.description}: ${what} ${key} failed: ${(err as Error).message}`, status(err) ?? null);
  }

  async put(key: string, body: Buffer, options: { ifAbsent?: boolean } = {}): Promise<boolean> {
    const Key = this.key(key);
    if (options.ifAbsent && (await this.exists(Key))) return false;
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.at.bucket, Key, Body: body, ...(options.ifAbsent ? { IfNoneMatch: '*' } : {}) }));
      return true;
    } catch (err) {
      if (options.ifAbsent && (status(err) === 412 || status(err) === 409)) return false;
      this.fail('writing', key, err);
    }
  }

  private atomic: Promise<boolean> | undefined;

  /** Probed once: a second conditional write of a fresh key must be refused. */
  atomicCreate(): Promise<boolean> {
    return (this.atomic ??= (async () => {
      const Key = this.key(`.claas-probe/${Date.now()}-${Math.random().toString(36).slice(2)}`);
      const write = async () => {
        try {
          await this.client.send(new PutObjectCommand({ Bucket: this.at.bucket, Key, Body: Buffer.from('probe'), IfNoneMatch: '*' }));
          return true;
        } catch (err) {
          if (status(err) === 412 || status(err) === 409) return false;
          this.fail('probing conditional writes with', Key, err);
        }
      };
      await write();
      const refused = !(await write());
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.at.bucket, Delete: { Objects: [{ Key }], Quiet: true } }));
      return refused;
    })());
  }

  private async exists(Key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.at.bucket, Key }));
      return true;
    } catch (err) {
      if (status(err) === 404) return false;
      this.fail('checking', Key, err);
    }
  }

  async get(key: string): Promise<Buffer | null> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.at.bucket, Key: this.key(key) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (status(err) === 404) return null;
      this.fail('reading', key, err);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const full = this.at.prefix ? `${this.at.prefix}/${prefix}` : prefix;
    const out: string[] = [];
    let token: string | undefined;
    try {
      do {
        const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.at.bucket, Prefix: full, ContinuationToken: token }));
        for (const o of r.Contents ?? []) if (o.Key) out.push(this.at.prefix ? o.Key.slice(this.at.prefix.length + 1) : o.Key);
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      this.fail('listing', prefix, err);
    }
    return out.sort();
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const Objects = keys.slice(i, i + 1000).map((k) => ({ Key: this.key(k) }));
      try {
        await this.client.send(new DeleteObjectsCommand({ Bucket: this.at.bucket, Delete: { Objects, Quiet: true } }));
      } catch (err) {
        this.fail('deleting', keys[i]!, err);
      }
    }
  }
}
