// The 64-bit Mersenne Twister (std::mt19937_64) and the libstdc++ uniform distributions drawn from it,
// so that a seed gives the same LoRA initialization and the same sampled tokens as the CPU engine.
const N = 312;
const M = 156;
const MASK64 = (1n << 64n) - 1n;

export class Mt19937_64 {
  // Each 64-bit word as two 32-bit halves; BigInt only where speed does not matter.
  private readonly hi = new Uint32Array(N);
  private readonly lo = new Uint32Array(N);
  private index = N;

  constructor(seed: number | bigint) {
    let x = BigInt(seed) & MASK64;
    for (let i = 0; i < N; i++) {
      this.hi[i] = Number(x >> 32n);
      this.lo[i] = Number(x & 0xffffffffn);
      x = (6364136223846793005n * (x ^ (x >> 62n)) + BigInt(i + 1)) & MASK64;
    }
  }

  private twist(): void {
    const hi = this.hi, lo = this.lo;
    for (let i = 0; i < N; i++) {
      const j = (i + 1) % N;
      // upper 33 bits of word i, lower 31 bits of word j
      const xh = hi[i]!;
      const xl = ((lo[i]! & 0x80000000) | (lo[j]! & 0x7fffffff)) >>> 0;
      let ah = xh >>> 1;
      let al = ((xl >>> 1) | ((xh & 1) << 31)) >>> 0;
      if (xl & 1) {
        ah = (ah ^ 0xb5026f5a) >>> 0;
        al = (al ^ 0xa96619e9) >>> 0;
      }
      const k = (i + M) % N;
      hi[i] = (hi[k]! ^ ah) >>> 0;
      lo[i] = (lo[k]! ^ al) >>> 0;
    }
    this.index = 0;
  }

  /** The next output as [high 32 bits, low 32 bits]. */
  nextPair(): [number, number] {
    if (this.index >= N) this.twist();
    let h = this.hi[this.index]!;
    let l = this.lo[this.index]!;
    this.index++;
    // y ^= (y >> 29) & 0x5555555555555555
    let sh = h >>> 29;
    let sl = ((l >>> 29) | (h << 3)) >>> 0;
    h = (h ^ (sh & 0x55555555)) >>> 0;
    l = (l ^ (sl & 0x55555555)) >>> 0;
    // y ^= (y << 17) & 0x71d67fffeda60000
    sh = ((h << 17) | (l >>> 15)) >>> 0;
    sl = (l << 17) >>> 0;
    h = (h ^ (sh & 0x71d67fff)) >>> 0;
    l = (l ^ (sl & 0xeda60000)) >>> 0;
    // y ^= (y << 37) & 0xfff7eee000000000
    sh = (l << 5) >>> 0;
    h = (h ^ (sh & 0xfff7eee0)) >>> 0;
    // y ^= y >> 43
    l = (l ^ (h >>> 11)) >>> 0;
    return [h, l];
  }

  next(): bigint {
    const [h, l] = this.nextPair();
    return (BigInt(h) << 32n) | BigInt(l);
  }
}

/** uint64 -> float32 rounded to nearest even, as the C++ conversion does (no double rounding). */
export function u64ToF32(h: number, l: number): number {
  if (h < 1 << 21) return Math.fround(h * 4294967296 + l); // exact in a double
  const v = (BigInt(h) << 32n) | BigInt(l);
  const bits = v.toString(2).length;
  const shift = BigInt(bits - 24);
  let mant = v >> shift;
  const rem = v & ((1n << shift) - 1n);
  const half = 1n << (shift - 1n);
  if (rem > half || (rem === half && (mant & 1n) === 1n)) mant += 1n;
  return Number(mant) * 2 ** Number(shift);
}

const TWO64 = 18446744073709551616;
const ONE_BELOW_F32 = Math.fround(1 - 2 ** -24);
const ONE_BELOW_F64 = 1 - 2 ** -53;

/** std::uniform_real_distribution<float>(a, b)(rng) as libstdc++ computes it. */
export function uniformFloat(rng: Mt19937_64, a: number, b: number): number {
  const [h, l] = rng.nextPair();
  let c = Math.fround(u64ToF32(h, l) / TWO64);
  if (c >= 1) c = ONE_BELOW_F32;
  return Math.fround(Math.fround(c * Math.fround(b - a)) + a);
}

/** std::uniform_real_distribution<double>(a, b)(rng) as libstdc++ computes it. */
export function uniformDouble(rng: Mt19937_64, a: number, b: number): number {
  const [h, l] = rng.nextPair();
  let c = Number((BigInt(h) << 32n) | BigInt(l)) / TWO64;
  if (c >= 1) c = ONE_BELOW_F64;
  return c * (b - a) + a;
}
