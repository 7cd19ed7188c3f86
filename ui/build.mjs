// Builds ../wan_mcp/server/ui/player.html: src/player.js bundled (esbuild, minified, every dependency
// inside) into src/player.html, one self-contained file. --check: fail if the shipped file differs.
// --host OUT builds the browser test's host page script instead (not shipped).
import { build } from "esbuild";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "wan_mcp", "server", "ui", "player.html");

const bundle = await build({
  entryPoints: [join(here, "src", "player.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  write: false,
  legalComments: "none",
  logLevel: "warning",
});
const script = bundle.outputFiles[0].text.replaceAll("</script", "<\\/script");
const template = await readFile(join(here, "src", "player.html"), "utf8");
const html = template.replace("/*SCRIPT*/", () => script);

// --host OUT: only the browser test's host page script (not shipped), into OUT (each test its own file).
const hostAt = process.argv.indexOf("--host");
if (hostAt !== -1) {
  await build({
    entryPoints: [join(here, "src", "test-host.js")],
    bundle: true,
    format: "iife",
    target: "es2022",
    outfile: process.argv[hostAt + 1],
    legalComments: "none",
    logLevel: "warning",
  });
  process.exit(0);
}

if (process.argv.includes("--check")) {
  const shipped = await readFile(target, "utf8").catch(() => "");
  if (shipped !== html) {
    console.error(`${target} is not what ui/src builds: run \`npm ci && node build.mjs\` in ui/ and commit it`);
    process.exit(1);
  }
  console.log("player.html matches its source");
} else {
  await mkdir(dirname(target), { recursive: true });
  await writeFile(target, html);
  console.log(`wrote ${target} (${html.length} bytes)`);
}
