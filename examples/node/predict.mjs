#!/usr/bin/env node
// Classify texts with a model folder from `llkd-edge export`, in Node (onnxruntime-node, no Python):
//
//   npm ci && node predict.mjs MODEL_DIR "some text" "another text"     # or texts on stdin, one per line
//   node predict.mjs MODEL_DIR --variant fp32 "some text"
//
// Writes one JSON line per text: {"text", "label", "probabilities": {label: p}}, as `llkd-edge predict` does.
import { readFileSync } from "node:fs";
import { readFile, realpath } from "node:fs/promises";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { loadClassifier } from "./classifier.mjs";

async function main(argv) {
  const args = [...argv];
  const variantAt = args.indexOf("--variant");
  const variant = variantAt >= 0 ? args.splice(variantAt, 2)[1] : null;
  const [modelDir, ...texts] = args;
  if (!modelDir) throw new Error("usage: node predict.mjs MODEL_DIR [--variant fp32|int8|int8-static] [TEXT ...]");
  const root = await realpath(modelDir);
  const read = async (name, kind) => {
    // a folder from someone else must not make us read other files: links out of it are refused
    const file = await realpath(path.join(modelDir, name));
    const rel = path.relative(root, file);
    if (rel.split(path.sep)[0] === ".." || path.isAbsolute(rel)) throw new Error(`${name}: lies outside the model folder; refused`);
    const data = await readFile(file);
    return kind === "json" ? JSON.parse(data.toString("utf8")) : new Uint8Array(data);
  };
  const clf = await loadClassifier({ ort, Tokenizer, read, variant, sessionOptions: { intraOpNumThreads: 1 } });
  const input = texts.length ? texts : readFileSync(0, "utf8").split("\n").filter((line) => line.trim());
  const results = await clf.predict(input);
  results.forEach((r, i) => process.stdout.write(JSON.stringify({ text: input[i], ...r }) + "\n"));
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});
