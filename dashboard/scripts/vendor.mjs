// Copies the browser files named in ../vendor.json from node_modules to ../static/vendor (git-ignored).
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const manifest = JSON.parse(readFileSync(join(root, "vendor.json"), "utf8"));
const out = join(root, "static", "vendor");
mkdirSync(out, { recursive: true });
for (const [name, source] of Object.entries(manifest)) {
  copyFileSync(join(root, "node_modules", source), join(out, name));
  console.log(`vendor: ${source} -> static/vendor/${name}`);
}
