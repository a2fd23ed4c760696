// Spreads a count of workgroups over a 2-D dispatch grid (each dimension is limited to 65535); kernels
// recover the flat index as wg.y * num_workgroups.x + wg.x.
export function grid(workgroups: number): [number, number] {
  const n = Math.max(1, Math.ceil(workgroups));
  const x = Math.min(n, 65535);
  return [x, Math.ceil(n / x)];
}
