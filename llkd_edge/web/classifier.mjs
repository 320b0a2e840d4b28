// An exported llkd-edge model in JavaScript, in Node or in a browser: the steps of llkd_edge/runtime.py
// (tokenise and cut to the model's token budget, pad per batch, run the ONNX graph, softmax), so the
// probabilities equal the Python runtime's. The caller brings ONNX Runtime (onnxruntime-node or
// onnxruntime-web), the Tokenizer class of @huggingface/tokenizers, and a way to read the folder's files.
//
//   const clf = await loadClassifier({ ort, Tokenizer, read });   // read(name, "json" | "bytes")
//   await clf.predict(["some text"]);   // -> [{ label, probabilities: { label: p, ... } }]

export async function loadClassifier({ ort, Tokenizer, read, variant = null, sessionOptions = {} }) {
  const manifest = await read("llkd_edge.json", "json");
  const labels = manifest.labels;
  const chosen = variant ?? manifest.default;
  const file = manifest.variants[chosen];
  if (!file) throw new Error(`no ${chosen} model in this folder (it has ${Object.keys(manifest.variants).join(", ")})`);
  const [tokenizerJson, tokenizerConfig, model] = await Promise.all([
    read("tokenizer.json", "json"), read("tokenizer_config.json", "json"), read(file, "bytes")]);
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const session = await ort.InferenceSession.create(model, sessionOptions);
  const maxLength = manifest.max_length ?? 128;
  const padId = manifest.pad_token_id ?? 0;
  // The template's special tokens ([CLS] ... [SEP] for BERT): what encoding an empty text adds.
  const special = tokenizer.encode("").ids;
  const [prefix, suffix] = [special.slice(0, 1), special.slice(1)];

  function ids(text) {
    const body = tokenizer.encode(text, { add_special_tokens: false }).ids;
    const room = Math.max(0, maxLength - prefix.length - suffix.length);
    return [...prefix, ...body.slice(0, room), ...suffix];  // cut as the Rust tokenizer's truncation does
  }

  async function logits(texts, batchSize = 32) {
    const out = [];
    for (let start = 0; start < texts.length; start += batchSize) {
      const batch = texts.slice(start, start + batchSize).map(ids);
      const width = Math.max(...batch.map((row) => row.length));
      const size = batch.length * width;
      const inputIds = new BigInt64Array(size).fill(BigInt(padId));
      const mask = new BigInt64Array(size);
      batch.forEach((row, i) => row.forEach((id, j) => { inputIds[i * width + j] = BigInt(id); mask[i * width + j] = 1n; }));
      const feed = {
        input_ids: new ort.Tensor("int64", inputIds, [batch.length, width]),
        attention_mask: new ort.Tensor("int64", mask, [batch.length, width]),
        token_type_ids: new ort.Tensor("int64", new BigInt64Array(size), [batch.length, width]),
      };
      const wanted = Object.fromEntries(session.inputNames.map((name) => [name, feed[name]]));
      const result = await session.run(wanted);
      const scores = result[session.outputNames[0]].data;
      for (let i = 0; i < batch.length; i++) out.push(Array.from(scores.slice(i * labels.length, (i + 1) * labels.length)));
    }
    return out;
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

  return { labels, variant: chosen, maxLength, manifest, logits, predict };
}
