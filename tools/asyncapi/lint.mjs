// Validates an AsyncAPI document with the AsyncAPI Initiative's own parser: the document
// against the AsyncAPI 3.0 JSON Schema, every $ref resolved, and the parser's built-in
// Spectral rules. Any error or warning fails; information and hints are printed.
//   node lint.mjs path/to/asyncapi.yaml
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node lint.mjs asyncapi.yaml');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(file, 'utf8'), { source: file });
const name = { [DiagnosticSeverity.Error]: 'error', [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info', [DiagnosticSeverity.Hint]: 'hint' };
let failed = false;
for (const d of diagnostics) {
  const severity = name[d.severity] ?? String(d.severity);
  failed ||= d.severity <= DiagnosticSeverity.Warning;
  const line = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : '';
  console.log(`${file}:${line} ${severity} ${d.code}: ${d.message} (at ${d.path.join('.')})`);
}
if (!document || failed) {
  console.error(`${file}: not a valid AsyncAPI document`);
  process.exit(1);
}
const channels = document.channels().length, messages = document.allMessages().length;
console.log(`${file}: AsyncAPI ${document.version()}, ${channels} channels, ${document.operations().length} operations, ${messages} messages: valid`);
