// Which matrix products TF.js 4.22's wasm backend runs fast (issue 22): the GraphModel's attention
// lowering (topology/graphdef/ops/linalg.py) follows these numbers. Node, wasm backend, one thread.
//
//   node bench/matmul_wasm.mjs
//
// The backend hands a product to XNNPACK only with batch 1 and both transpose flags off; every other
// product (batch > 1, transpose_a or transpose_b) runs in a plain blocked loop, several times slower.
// Shapes: BERT-tiny's attention (128 tokens, 2 heads of 64) and ViT-Ti's (37 tokens, 3 heads of 64).
// On a quiet machine (load 1.8, 2026-12-05): 0.25 ms at batch 1 without flags, 1.1 ms with transpose_b,
// 1.8 ms at batch 2; 128 tokens: 1.4 ms over the heads, 0.6 ms per head; 37 tokens: 0.19 ms over the
// heads, 0.6 ms per head. Under load every number grows, the order stays. The block-diagonal line (all
// heads in one batch-1 product, load 2.8): 0.41 ms at 128 tokens, 0.31 ms at 37; in the whole models
// (bench/browser_compare.mjs, Node profile) it wins for ViT-Ti (24 products 4.4 -> 2.1 ms) and loses
// for BERT-tiny (kernels 4.6 -> 4.9 ms: its per-head form gets q/k/v merged into one matmul), so
// topology/graphdef/ops/linalg.py uses it only below PER_HEAD_MIN_MACS.
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
await tf.setBackend('wasm');
await tf.ready();
console.log(`backend: ${tf.getBackend()}, tfjs ${tf.version.tfjs}`);

function time(name, f, calls = 50) {
  // read the result inside tidy without returning it (tidy would walk a returned array element by element)
  const call = () => tf.tidy(() => { f().dataSync(); });
  for (let i = 0; i < 5; i++) call();
  const start = performance.now();
  for (let i = 0; i < calls; i++) call();
  console.log(`${name.padEnd(58)} ${((performance.now() - start) / calls).toFixed(3)} ms`);
}

const r = (...shape) => tf.randomNormal(shape);
const [L, d] = [128, 64];
const a1 = r(1, L, d), bPlain = r(1, d, L), bT = r(1, L, d), a2 = r(2, L, d), b2 = r(2, d, L);
time('batch 1, no flags        [1,128,64]x[1,64,128]', () => tf.matMul(a1, bPlain));
time('batch 1, transpose_b     [1,128,64]x[1,128,64]^T', () => tf.matMul(a1, bT, false, true));
time('batch 1, transpose_a', () => tf.matMul(tf.transpose(a1, [0, 2, 1]), bPlain, true, false));
time('batch 2, no flags        [2,128,64]x[2,64,128]', () => tf.matMul(a2, b2));
for (const [tokens, heads] of [[128, 2], [37, 3]]) {
  const q = r(1, tokens, heads, d), k = r(1, tokens, heads, d);
  const label = `${tokens} tokens, ${heads} heads:`;
  time(`${label} one BatchMatMul over heads, no flags`,
      () => tf.matMul(tf.transpose(q, [0, 2, 1, 3]), tf.transpose(k, [0, 2, 3, 1])));
  time(`${label} one BatchMatMul over heads, adj_y`,
      () => tf.matMul(tf.transpose(q, [0, 2, 1, 3]), tf.transpose(k, [0, 2, 1, 3]), false, true));
  time(`${label} Unpack, one batch-1 product per head, Pack`, () => {
    const qs = tf.unstack(tf.transpose(q, [0, 2, 1, 3]), 1), ks = tf.unstack(tf.transpose(k, [0, 2, 3, 1]), 1);
    return tf.stack(qs.map((x, i) => tf.matMul(x, ks[i])), 1);
  });
  // every head in one batch-1 product against a block-diagonal operand: Kᵀ [H·d, L] times a 0/1
  // mask [H·d, H, L] by one broadcasting Mul (TF.js's Tile is ~0.8 ms in wasm, the Mul ~0.04 ms)
  const eye = Array.from({length: heads * d * heads}, (_, i) => (Math.floor(Math.floor(i / heads) / d) === i % heads ? 1 : 0));
  const mask = tf.tensor(eye, [1, heads * d, heads, 1]);
  time(`${label} block-diagonal, one batch-1 product`, () => tf.matMul(tf.reshape(q, [1, tokens, heads * d]),
      tf.reshape(tf.mul(tf.reshape(tf.transpose(tf.reshape(k, [1, tokens, heads * d]), [0, 2, 1]), [1, heads * d, 1, tokens]),
                        mask), [1, heads * d, heads * tokens])));
}
