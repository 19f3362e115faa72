// Bundles the console into OUTDIR (default ../static): app.js (src/main.ts and everything it
// imports, generated clients included), app.css and index.html. The output depends only on the
// sources and the locked packages, so `make check-console` can rebuild and compare.
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const out = process.argv[2] ?? "../static";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
await build({
  entryPoints: ["src/app.css"],
  bundle: true,
  minify: true,
  charset: "utf8",
  outfile: join(out, "app.css"),
  logLevel: "warning",
});
copyFileSync("src/index.html", join(out, "index.html"));
