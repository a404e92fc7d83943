// Parse GitHub Actions workflow files with GitHub's own parser (@actions/workflow-parser), the one behind
// the Actions VS Code extension: schema (keys, types, required values), expression syntax, and which
// expression contexts each key allows (e.g. no `job` or `steps` in a job-level `env:`).
//
//   node --import ./register.mjs check.mjs FILE...      (the launcher `check-workflows` does this)
//
// Prints `file:line:col: message` for each error, exits 1 if there are any, 2 on bad usage, else 0
// after one `ok` line.
import { readFileSync } from "node:fs";
import { convertWorkflowTemplate, NoOperationTraceWriter, parseWorkflow } from "@actions/workflow-parser";
import { ErrorPolicy } from "@actions/workflow-parser/model/convert";

async function check(name) {
  let content;
  try {
    content = readFileSync(name, "utf8");
  } catch (err) {
    return [`${name}: cannot read: ${err.message}`];
  }
  // Errors of the YAML reader and of the schema, plus contexts/functions of `${{ }}` expressions.
  const parsed = parseWorkflow({ name, content }, new NoOperationTraceWriter());
  if (parsed.value !== undefined) {
    // The converter adds what the schema cannot see: `if:` conditions (contexts allowed there), job
    // `needs:` that name missing jobs or form cycles, matrix, concurrency, event filters, cron syntax.
    // TryConversion: convert even after schema errors, so that every error is reported in one run.
    await convertWorkflowTemplate(parsed.context, parsed.value, undefined, {
      errorPolicy: ErrorPolicy.TryConversion,
    });
  }
  const seen = new Set();
  const lines = [];
  for (const err of parsed.context.errors.getErrors()) {
    const where = err.range ? `${name}:${err.range.start.line}:${err.range.start.column}` : name;
    // One line per error: the YAML reader's messages end with a multi-line code frame, dropped here.
    const message = err.rawMessage.split("\n")[0].replace(/:$/, "");
    const line = `${where}: ${message}`;
    if (!seen.has(line)) {
      seen.add(line);
      lines.push(line);
    }
  }
  return lines;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node --import ./register.mjs check.mjs WORKFLOW.yml...");
  process.exit(2);
}
let errors = 0;
for (const file of files) {
  for (const line of await check(file)) {
    console.log(line);
    errors += 1;
  }
}
if (errors > 0) {
  console.error(`${errors} error(s) found by GitHub's workflow parser (@actions/workflow-parser)`);
  process.exit(1);
}
console.log(`ok: ${files.length} workflow file(s) accepted by GitHub's workflow parser`);
