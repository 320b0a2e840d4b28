// The page of `llkd-edge serve`: loads the model the service serves (/model/...: the same variant as
// /predict) into onnxruntime-web and classifies what a person types, in the browser. Element ids and data-
// attributes are what tests read.
import * as ort from "onnxruntime-web";
import { Tokenizer } from "@huggingface/tokenizers";
import { loadClassifier } from "llkd-classifier";

const $ = (id) => document.getElementById(id);
const status = (state, message) => { $("status").dataset.state = state; $("status").textContent = message; };

// The .wasm files sit next to ort's module, wherever the import map points.
const ortUrl = new URL(import.meta.resolve("onnxruntime-web"));
ort.env.wasm.wasmPaths = ortUrl.href.slice(0, ortUrl.href.lastIndexOf("/") + 1);
ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a plain page does not have

// From a CDN, the import map carries each file's Subresource Integrity hash. The browser checks the modules
// itself; the .wasm ort would fetch unchecked, so it is fetched here with its hash and handed to ort.
async function checkedWasm() {
  const { integrity = {} } = JSON.parse(document.querySelector("script[type=importmap]").textContent);
  const url = new URL("ort-wasm-simd-threaded.wasm", ortUrl).href;
  if (!integrity[url]) return;
  const response = await fetch(url, { integrity: integrity[url] });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  ort.env.wasm.wasmBinary = new Uint8Array(await response.arrayBuffer());
}

async function read(name, kind) {
  const response = await fetch(`/model/${name}`);
  if (!response.ok) throw new Error(`/model/${name}: HTTP ${response.status}`);
  return kind === "json" ? response.json() : new Uint8Array(await response.arrayBuffer());
}

function show(result) {
  $("label").textContent = result.label;
  $("label").dataset.label = result.label;
  $("bars").replaceChildren(...Object.entries(result.probabilities).map(([name, p]) => {
    const row = document.createElement("div");
    row.className = name === result.label ? "bar top" : "bar";
    row.dataset.label = name;
    row.dataset.p = String(p);
    row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span class="p"></span>`;
    row.children[0].textContent = name;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.children[2].textContent = `${(100 * p).toFixed(1)}%`;
    return row;
  }));
}

try {
  const started = performance.now();
  await checkedWasm();
  const manifest = await read("manifest.json", "json");  // labels, token budget and the one model served
  const clf = await loadClassifier({ ort, Tokenizer, read, manifest });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  status("ready", `Ready: ${clf.labels.length} labels, ${clf.variant} model, loaded in ${seconds} s.`);
  $("text").disabled = $("go").disabled = false;
  const classify = async () => {
    const text = $("text").value;
    if (!text.trim()) return;
    $("go").disabled = true;
    try {
      const [result] = await clf.predict([text]);
      $("label").dataset.text = text;
      show(result);
    } finally {
      $("go").disabled = false;
    }
  };
  $("go").addEventListener("click", classify);
  $("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(); });
} catch (error) {
  status("error", `Could not load the model: ${error.message}`);
}
