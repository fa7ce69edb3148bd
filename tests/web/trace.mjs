// Turn a 28x28 MNIST digit into pen strokes, the way a person would retrace its ink:
// upsample, threshold, thin to a 1-pixel skeleton (Zhang-Suen), then walk the skeleton.

const UP = 4; // skeleton resolution: 112 x 112

function upsample(pixels, side, up) {
  // Bilinear, so the skeleton of a diagonal stroke is not a staircase.
  const n = side * up;
  const out = new Float32Array(n * n);
  for (let y = 0; y < n; y++) {
    const sy = Math.min(side - 1, Math.max(0, (y + 0.5) / up - 0.5));
    const y0 = Math.floor(sy), y1 = Math.min(side - 1, y0 + 1), fy = sy - y0;
    for (let x = 0; x < n; x++) {
      const sx = Math.min(side - 1, Math.max(0, (x + 0.5) / up - 0.5));
      const x0 = Math.floor(sx), x1 = Math.min(side - 1, x0 + 1), fx = sx - x0;
      const a = pixels[y0 * side + x0], b = pixels[y0 * side + x1];
      const c = pixels[y1 * side + x0], d = pixels[y1 * side + x1];
      out[y * n + x] = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy;
    }
  }
  return {img: out, n};
}

const NB = [[-1, 0], [-1, 1], [0, 1], [1, 1], [1, 0], [1, -1], [0, -1], [-1, -1]]; // P2..P9 clockwise

function thin(mask, n) {
  const at = (y, x) => (y >= 0 && y < n && x >= 0 && x < n ? mask[y * n + x] : 0);
  let changed = true;
  while (changed) {
    changed = false;
    for (const step of [0, 1]) {
      const drop = [];
      for (let y = 0; y < n; y++) {
        for (let x = 0; x < n; x++) {
          if (!mask[y * n + x]) continue;
          const p = NB.map(([dy, dx]) => at(y + dy, x + dx));
          const b = p.reduce((s, v) => s + v, 0);
          let a = 0;
          for (let i = 0; i < 8; i++) if (!p[i] && p[(i + 1) % 8]) a++;
          const [p2, , p4, , p6, , p8] = p;
          const ok = step === 0 ? !(p2 && p4 && p6) && !(p4 && p6 && p8) : !(p2 && p4 && p8) && !(p2 && p6 && p8);
          if (b >= 2 && b <= 6 && a === 1 && ok) drop.push(y * n + x);
        }
      }
      for (const i of drop) mask[i] = 0;
      if (drop.length) changed = true;
    }
  }
  return mask;
}

function neighbours(mask, n, i) {
  const y = Math.floor(i / n), x = i % n;
  const out = [];
  // 4-neighbours first so the walk follows the line instead of cutting corners.
  for (const [dy, dx] of [[-1, 0], [0, 1], [1, 0], [0, -1], [-1, 1], [1, 1], [1, -1], [-1, -1]]) {
    const yy = y + dy, xx = x + dx;
    if (yy >= 0 && yy < n && xx >= 0 && xx < n && mask[yy * n + xx]) out.push(yy * n + xx);
  }
  return out;
}

function walk(mask, n) {
  const visited = new Uint8Array(n * n);
  const pixels = [];
  for (let i = 0; i < n * n; i++) if (mask[i]) pixels.push(i);
  const degree = (i) => neighbours(mask, n, i).length;
  const strokes = [];
  for (;;) {
    const left = pixels.filter((i) => !visited[i]);
    if (!left.length) break;
    // Start at a line end when there is one, as a pen would.
    let cur = left.find((i) => degree(i) === 1) ?? left[0];
    const stroke = [cur];
    visited[cur] = 1;
    for (;;) {
      const next = neighbours(mask, n, cur).find((j) => !visited[j]);
      if (next === undefined) break;
      visited[next] = 1;
      stroke.push(next);
      cur = next;
    }
    // Close loops and joins: end on an already drawn neighbour if the walk stopped next to one.
    const join = neighbours(mask, n, cur).find((j) => visited[j] && !stroke.slice(-3).includes(j));
    if (join !== undefined) stroke.push(join);
    if (stroke.length >= 3) strokes.push(stroke);
  }
  return strokes.map((s) => s.map((i) => [i % n, Math.floor(i / n)]));
}

/**
 * Strokes (lists of [x, y] in 0..1 of the 28x28 frame) retracing `pixels` (784 values in 0..1).
 * Every `every`-th skeleton point is kept, plus each stroke's last point.
 */
export function traceDigit(pixels, {threshold = 0.5, every = 3} = {}) {
  const {img, n} = upsample(pixels, 28, UP);
  const mask = new Uint8Array(n * n);
  for (let i = 0; i < n * n; i++) mask[i] = img[i] > threshold ? 1 : 0;
  return walk(thin(mask, n), n).map((stroke) => {
    const kept = stroke.filter((_, i) => i % every === 0 || i === stroke.length - 1);
    return kept.map(([x, y]) => [(x + 0.5) / n, (y + 0.5) / n]);
  });
}
