// The adapters this process serves: which version each name serves (the one owner of that), and
// which of them are resident in the engine. Residents form a set bounded in bytes, least recently
// used first out; an evicted adapter is loaded again from its version folder when next asked for.
// Whoever uses an adapter holds a lease on it, and an adapter is freed (evicted, or replaced by a
// newer version) only once its last lease is released.
import type { Adapter, Engine } from '../engine/engine.js';
import { NotFoundError } from '../errors.js';

/** A use of an adapter version: release it when the use ends (idempotent). */
export interface AdapterLease {
  readonly name: string;
  readonly version: string;
  readonly path: string | undefined;
  readonly adapter: Adapter;
  release(): void;
}

interface Resident {
  name: string;
  version: string;
  /** The version's PEFT folder: where an evicted adapter is loaded from again. */
  path: string | undefined;
  adapter: Adapter | null;
  loading: Promise<Adapter> | null;
  leases: number;
  lastUsed: number;
  /** Replaced by a newer version: freed when its last lease goes. */
  retired: boolean;
  /** Its versions belong to the adapter registry (as opposed to loaded by name through the vLLM admin routes). */
  managed: boolean;
}

export interface ResidentStats {
  adapters: number;
  resident: number;
  residentBytes: number;
  budgetBytes: number | null;
  loads: number;
  evictions: number;
}

export class ResidentAdapters {
  private readonly served = new Map<string, Resident>();
  /** Replaced versions still leased. */
  private readonly retired = new Set<Resident>();
  private clock = 0;
  /** What the resident adapters hold, kept as they come and go (checked on every release). */
  private residentBytes = 0;
  /** Makes sure a version's folder is there before it loads (fetching it from an object store). */
  private prepare: ((name: string, version: string, path: string) => Promise<void>) | null = null;
  private loads = 0;
  private evictions = 0;

  /** `budgetBytes`: the most the resident adapters may hold (Infinity: no bound). */
  constructor(
    private readonly engine: Engine,
    readonly budgetBytes = Infinity,
  ) {
    if (!(budgetBytes > 0)) throw new RangeError(`the adapter memory budget must be positive (got ${String(budgetBytes)})`);
  }

  /** Serves `version` under `name` from now on; the version it replaces is freed once unused. */
  set(name: string, version: string, adapter: Adapter, path?: string, managed = false): void {
    const old = this.served.get(name);
    this.served.set(name, { name, version, path, adapter, loading: null, leases: 0, lastUsed: ++this.clock, retired: false, managed });
    this.residentBytes += adapter.bytes;
    if (old) this.retire(old, adapter);
    this.evict();
  }

  /** Asked about a name this process does not serve (the registry: an adapter another node created). */
  private resolver: ((name: string) => Promise<boolean>) | null = null;

  setResolver(resolver: (name: string) => Promise<boolean>): void {
    this.resolver = resolver;
  }

  /** Whether `name` is served, asking the resolver (which may start serving it) when it is not yet. */
  async ensure(name: string): Promise<boolean> {
    if (this.served.has(name)) return true;
    return (await this.resolver?.(name)) === true && this.served.has(name);
  }

  /** What runs before a version is loaded from its folder (the registry fetching a missing one). */
  setPrepare(prepare: (name: string, version: string, path: string) => Promise<void>): void {
    this.prepare = prepare;
  }

  /** Serves the version in `path` under `name`, loaded when first asked for. */
  register(name: string, version: string, path: string, managed = false): void {
    const old = this.served.get(name);
    this.served.set(name, { name, version, path, adapter: null, loading: null, leases: 0, lastUsed: ++this.clock, retired: false, managed });
    if (old) this.retire(old, null);
  }

  /** Stops serving `name`; false when it was not served. */
  remove(name: string): boolean {
    const old = this.served.get(name);
    if (!old) return false;
    this.served.delete(name);
    this.retire(old, null);
    return true;
  }

  has(name: string): boolean {
    return this.served.has(name);
  }

  /** Whether `name`'s versions belong to the adapter registry (only it may stop serving them). */
  managed(name: string): boolean {
    return this.served.get(name)?.managed === true;
  }

  /** The version served under `name`, without loading it. */
  version(name: string): { version: string; path: string | undefined } | undefined {
    const r = this.served.get(name);
    return r && { version: r.version, path: r.path };
  }

  names(): { name: string; version: string }[] {
    return [...this.served.values()].map((r) => ({ name: r.name, version: r.version }));
  }

  /** The adapter served under `name`, loaded if it was evicted; hold the lease while using it. */
  async acquire(name: string): Promise<AdapterLease> {
    const r = this.served.get(name);
    if (!r) throw new NotFoundError(`The model \`${name}\` does not exist.`);
    r.leases++;
    r.lastUsed = ++this.clock;
    let adapter: Adapter;
    try {
      adapter = r.adapter ?? (await (r.loading ??= this.load(r)));
    } catch (err) {
      this.release(r);
      throw err;
    }
    let released = false;
    return {
      name: r.name,
      version: r.version,
      path: r.path,
      adapter,
      release: () => {
        if (released) return;
        released = true;
        this.release(r);
      },
    };
  }

  stats(): ResidentStats {
    const all = [...this.served.values(), ...this.retired];
    const resident = all.filter((r) => r.adapter !== null);
    return {
      adapters: this.served.size,
      resident: resident.length,
      residentBytes: this.residentBytes,
      budgetBytes: Number.isFinite(this.budgetBytes) ? this.budgetBytes : null,
      loads: this.loads,
      evictions: this.evictions,
    };
  }

  private async load(r: Resident): Promise<Adapter> {
    if (!r.path) throw new NotFoundError(`adapter ${r.name} (${r.version}) was evicted and has no folder to load it from`);
    try {
      await this.prepare?.(r.name, r.version, r.path);
      const adapter = await this.engine.loadAdapter(r.path);
      this.loads++;
      if (r.retired || this.served.get(r.name) !== r) {
        // Replaced while loading: serve this lease, then free it with the rest of the retired version.
        r.adapter = adapter;
        this.residentBytes += adapter.bytes;
        return adapter;
      }
      r.adapter = adapter;
      this.residentBytes += adapter.bytes;
      this.evict();
      return adapter;
    } finally {
      r.loading = null;
    }
  }

  private release(r: Resident): void {
    r.leases--;
    if (r.retired && r.leases === 0) {
      this.retired.delete(r);
      this.free(r);
    } else {
      this.evict();
    }
  }

  /** Disposes a resident adapter and stops counting it. */
  private free(r: Resident): void {
    if (!r.adapter) return;
    this.residentBytes -= r.adapter.bytes;
    r.adapter.dispose();
    r.adapter = null;
  }

  /** `keep`: the adapter that replaces it, when it is the same object (re-served, not replaced). */
  private retire(r: Resident, keep: Adapter | null): void {
    r.retired = true;
    if (r.adapter === keep && keep !== null) {
      // Served again under the new entry, which counts it.
      this.residentBytes -= keep.bytes;
      r.adapter = null;
    }
    if (r.leases === 0) {
      this.free(r);
    } else {
      this.retired.add(r);
    }
  }

  /**
   * Frees least recently used, unleased adapters that can be loaded again until the residents fit
   * the budget. Leased adapters stay: the budget can be exceeded while more adapters are in use at
   * once than it holds.
   */
  private evict(): void {
    if (!Number.isFinite(this.budgetBytes)) return;
    if (this.residentBytes <= this.budgetBytes) return;
    const candidates = [...this.served.values()].filter((r) => r.adapter && r.leases === 0 && r.path).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const r of candidates) {
      if (this.residentBytes <= this.budgetBytes) break;
      this.free(r);
      this.evictions++;
    }
  }
}
