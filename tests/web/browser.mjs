// Launch Debian's Chromium through playwright-core, offline and with a throwaway profile.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {createRequire} from 'node:module';

const require = createRequire(import.meta.url);
const {chromium} = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// --disable-gpu keeps Chromium off real GPUs; WebGL then runs on SwiftShader (software),
// which Chromium only allows for WebGL with --enable-unsafe-swiftshader.
export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
];

/** A persistent context on a fresh --user-data-dir; `close()` removes the profile. */
export async function launch(options = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'f2t-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS,
    viewport: {width: 1280, height: 900}, ...options,
  });
  // No network beyond the local test server; anything else is refused and remembered.
  const blocked = [];
  await context.route(/^(?!http:\/\/127\.0\.0\.1[:/])/, (route) => {
    blocked.push(route.request().url());
    return route.abort();
  });
  return {
    context,
    blocked,
    async close() {
      await context.close();
      fs.rmSync(profile, {recursive: true, force: true});
    },
  };
}
