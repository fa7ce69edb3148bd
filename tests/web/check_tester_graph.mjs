// Load a GraphModel in web_demo/tester.html (real Chromium) and run it on a JSON input; print the result.
//   node tests/web/check_tester_graph.mjs SITE_DIR MODEL_SUBDIR INPUT_JSON_FILE
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(ROOT, 'package.json'));
const {chromium} = require('playwright-core');
const [site, model, inputFile] = process.argv.slice(2);
const TYPES = {'.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json', '.wasm': 'application/wasm',
  '.css': 'text/css'};
const server = http.createServer((req, res) => {
  const file = path.join(site, decodeURIComponent(req.url.split('?')[0]));
  fs.readFile(file, (err, data) => {
    if (err) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, {'content-type': TYPES[path.extname(file)] || 'application/octet-stream'});
    res.end(data);
  });
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const browser = await chromium.launch({executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu']});
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/tester.html`);
  await page.fill('#model-url', `${model}/model.json`);
  await page.click('#load-url');
  const settled = (states) => page.waitForFunction((s) => s.includes(document.body.dataset.state), states, {timeout: 120000});
  await settled(['loaded', 'error']);
  const summary = await page.textContent('#summary');
  await page.selectOption('#backend', 'wasm');
  await page.check('input[name="mode"][value="json"]');
  await page.fill('#json-input', fs.readFileSync(inputFile, 'utf8'));
  await page.click('#run');
  await settled(['done', 'error']);
  const state = await page.evaluate(() => document.body.dataset.state);
  const result = await page.getAttribute('#outputs', 'data-result');
  process.stdout.write(JSON.stringify({state, summary, error: await page.textContent('#error'),
    result: result ? JSON.parse(result) : null}) + '\n');
} finally {
  await browser.close();
  server.close();
}
