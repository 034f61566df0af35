// Builds the package: Protobuf code from proto/roomcast.proto (buf +
// protoc-gen-es), ES modules and type declarations in dist/ (tsc), and
// minified browser bundles in dist/browser/ (esbuild), then prints the size
// of each bundle, minified and gzipped.
//
//   node scripts/build.mjs          (npm run build)
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const run = (command, args) => execFileSync(command, args, { stdio: "inherit" });

rmSync("dist", { recursive: true, force: true });
run("npx", ["buf", "generate"]);
run("npx", ["tsc", "-p", "."]);

// One bundle per codec choice: the MessagePack build must not carry the
// Protobuf runtime, so the codecs are separate entry points.
const bundles = [
  { name: "roomcast.min.js", entry: "src/index.ts", what: "MessagePack only" },
  { name: "roomcast-proto.min.js", entry: "src/browser-proto.ts", what: "MessagePack and Protobuf" },
];
for (const { name, entry } of bundles) {
  await esbuild.build({
    entryPoints: [entry],
    outfile: `dist/browser/${name}`,
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    legalComments: "none",
  });
}
for (const { name, what } of bundles) {
  const code = readFileSync(`dist/browser/${name}`);
  const kb = (n) => (n / 1024).toFixed(1);
  console.log(`${name.padEnd(24)} ${what.padEnd(26)} ${kb(code.length)} KiB min, ${kb(gzipSync(code, { level: 9 }).length)} KiB min+gzip`);
}
