// IEEE binary16 and bfloat16 conversions for 16-bit weight storage: half/bf16 bits to f32 exactly, and
// f32 to half rounded to nearest, ties to even (what a GPU's f32 -> f16 conversion does by default).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The value of IEEE half-precision bits (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** The value of bfloat16 bits (the top half of an f32; exact). */
export function bf16ToFloat(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/**
 * Half-precision bits nearest to `x` (rounded to f32 first), ties to even; beyond the largest half
 * (65504, plus half an ulp) the result is an infinity; NaN stays a (quiet) NaN.
 */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  // Unbiased exponent e; half normals have e in [-14, 15].
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // 13 bits drop; round to nearest even on them. A carry out of the mantissa bumps the exponent,
    // which the addition does by itself (and 0x7bff + 1 ulp becomes 0x7c00, the infinity).
    const half = ((e + 15) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    const up = rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1);
    return sign | (half + (up ? 1 : 0));
  }
  // Subnormal half (or zero): value = m * 2^-24 with m the significand shifted right.
  if (e < -25) return sign; // below half of the smallest subnormal: zero
  mant |= 0x800000; // the implicit leading 1
  const shift = -e - 1; // 14..24 bits drop from the 24-bit significand to leave m
  const m = mant >>> shift;
  const rest = mant & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  const up = rest > halfway || (rest === halfway && (m & 1) === 1);
  return sign | (m + (up ? 1 : 0));
}
