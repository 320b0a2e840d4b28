// An exported llkd-edge model in JavaScript, in Node or in a browser: the steps of llkd_edge/runtime.py
// (tokenise and cut to the model's token budget, batch by length as the model allows, run the ONNX graph,
// softmax), so the probabilities equal the Python runtime's. The caller brings ONNX Runtime (onnxruntime-node or
// onnxruntime-web), the Tokenizer class of @huggingface/tokenizers, and a way to read the folder's files.
//
//   const clf = await loadClassifier({ ort, Tokenizer, read });   // read(name, "json" | "bytes")
//   await clf.predict(["some text"]);   // -> [{ label, probabilities: { label: p, ... } }]
//
// `manifest`: the folder's llkd_edge.json already read, or the few keys used here (labels, max_length,
// pad_token_id, default, variants), as `llkd-edge serve` hands them to its page; null: read llkd_edge.json.

export async function loadClassifier({ ort, Tokenizer, read, variant = null, sessionOptions = {}, manifest = null }) {
  manifest ??= await read("llkd_edge.json", "json");
  const labels = manifest.labels;
  const chosen = variant ?? manifest.default;
  const file = manifest.variants[chosen];
  if (!file) throw new Error(`no ${chosen} model in this folder (it has ${Object.keys(manifest.variants).join(", ")})`);
  // A folder from someone else must not make the app read other files (llkd_edge/runtime.py refuses the same;
  // links out of the folder are for the caller's `read` to refuse).
  if (/^([\\/]|[A-Za-z]:)/.test(file) || file.split(/[\\/]/).includes("..")) {
    throw new Error(`${file}: lies outside the model folder; refused`);
  }
  const [tokenizerJson, tokenizerConfig, model] = await Promise.all([
    read("tokenizer.json", "json"), read("tokenizer_config.json", "json"), read(file, "bytes")]);
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const session = await ort.InferenceSession.create(model, sessionOptions);
  const maxLength = manifest.max_length ?? 128;
  const padId = manifest.pad_token_id ?? 0;
  const { prefix, suffix, typeId } = specialTokens(tokenizerJson.post_processor);
  const batching = batchingOf(model);

  // [ids, type ids] of one text: the body cut to the budget the special tokens leave, as the Rust tokenizer's
  // truncation does, then the post-processor's tokens around it.
  function encode(text) {
    const body = tokenizer.encode(text, { add_special_tokens: false }).ids;
    const room = Math.max(0, maxLength - prefix.length - suffix.length);
    const cut = body.slice(0, room).map((id) => [id, typeId]);
    const tokens = [...prefix, ...cut, ...suffix];
    return [tokens.map(([id]) => id), tokens.map(([, type]) => type)];
  }

  async function logits(texts, batchSize = 32) {
    const encoded = texts.map(encode);
    const out = new Array(texts.length);
    for (const rows of calls(encoded.map(([row]) => row.length), batchSize)) {
      const batch = rows.map((i) => encoded[i]);
      const width = Math.max(...batch.map(([row]) => row.length));
      const size = batch.length * width;
      const inputIds = new BigInt64Array(size).fill(BigInt(padId));
      const mask = new BigInt64Array(size);
      const types = new BigInt64Array(size);
      batch.forEach(([row, rowTypes], i) => row.forEach((id, j) => {
        inputIds[i * width + j] = BigInt(id);
        mask[i * width + j] = 1n;
        types[i * width + j] = BigInt(rowTypes[j]);
      }));
      const feed = {
        input_ids: new ort.Tensor("int64", inputIds, [batch.length, width]),
        attention_mask: new ort.Tensor("int64", mask, [batch.length, width]),
        token_type_ids: new ort.Tensor("int64", types, [batch.length, width]),
      };
      const wanted = Object.fromEntries(session.inputNames.map((name) => [name, feed[name]]));
      const result = await session.run(wanted);
      const scores = result[session.outputNames[0]].data;
      rows.forEach((row, i) => { out[row] = Array.from(scores.slice(i * labels.length, (i + 1) * labels.length)); });
    }
    return out;
  }

  // Row indices for each model call, as llkd_edge/runtime.py cuts them: sorted by token length, then batches of
  // texts of similar length (padded), of one length (same length), or of one text.
  function calls(lengths, batchSize) {
    const size = batching === "one text" ? 1 : batchSize;
    const order = [...lengths.keys()].sort((a, b) => lengths[a] - lengths[b]);  // a stable sort
    const groups = [];
    for (const i of order) {
      const last = groups.at(-1);
      const joins = last && last.length < size && (batching !== "same length" || lengths[last[0]] === lengths[i]);
      if (joins) last.push(i); else groups.push([i]);
    }
    return groups;
  }

  function softmax(row) {
    const top = Math.max(...row);
    const e = row.map((x) => Math.exp(x - top));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / sum);
  }

  async function predict(texts, batchSize = 32) {
    return (await logits(texts, batchSize)).map((row) => {
      const p = softmax(row);
      const best = p.indexOf(Math.max(...p));
      return { label: labels[best], probabilities: Object.fromEntries(labels.map((name, k) => [name, p[k]])) };
    });
  }

  return { labels, variant: chosen, maxLength, manifest, batching, logits, predict };
}

// How texts may share a call so that none moves another's scores, read from the ONNX file's op types as
// llkd_edge/runtime.py does (BATCHING there): dynamic int8 computes activation scales from the whole call (one
// text), static int8's fixed ranges do not hold padding (same length), fp32 masks padding out exactly (padded).
function batchingOf(model) {
  if (contains(model, "DynamicQuantize")) return "one text";
  const quantised = ["QuantizeLinear", "QLinear", "MatMulInteger", "ConvInteger"].some((op) => contains(model, op));
  return quantised ? "same length" : "padded";
}

function contains(bytes, word) {
  const first = word.charCodeAt(0);
  outer: for (let i = bytes.indexOf(first); i >= 0 && i <= bytes.length - word.length; i = bytes.indexOf(first, i + 1)) {
    for (let j = 1; j < word.length; j++) if (bytes[i + j] !== word.charCodeAt(j)) continue outer;
    return true;
  }
  return false;
}

// The special tokens the tokenizer's post-processor puts around one text, as [id, type id] pairs, and the type
// id of the text's own tokens: what the Rust tokenizer (the Python runtime) adds. TemplateProcessing's "single"
// template, Bert/RobertaProcessing's cls and sep, and a Sequence applying each in turn; others add none.
export function specialTokens(processor) {
  if (!processor) return { prefix: [], suffix: [], typeId: 0 };
  if (processor.type === "Sequence") {
    return processor.processors.reduce((inner, next) => {
      const outer = specialTokens(next);  // a later step wraps what the earlier ones made
      return { prefix: [...outer.prefix, ...inner.prefix], suffix: [...inner.suffix, ...outer.suffix],
               typeId: next.type === "TemplateProcessing" ? outer.typeId : inner.typeId };
    }, specialTokens(null));
  }
  if (processor.type === "BertProcessing" || processor.type === "RobertaProcessing") {
    return { prefix: [[processor.cls[1], 0]], suffix: [[processor.sep[1], 0]], typeId: 0 };
  }
  if (processor.type !== "TemplateProcessing") return specialTokens(null);
  const out = { prefix: [], suffix: [], typeId: 0 };
  let seenText = false;
  for (const piece of processor.single) {
    if (piece.Sequence) {
      seenText = true;
      out.typeId = piece.Sequence.type_id ?? 0;
      continue;
    }
    const { id, type_id: type = 0 } = piece.SpecialToken;
    const pairs = processor.special_tokens[id].ids.map((tokenId) => [tokenId, type]);
    (seenText ? out.suffix : out.prefix).push(...pairs);
  }
  return out;
}
